"""Side-by-side timing of onnxruntime sessions: interleaved runs, rotated order, medians.

Every speed figure the pass acts on or reports is a ratio of medians measured in one process,
so drift and a shared CPU hit every model alike.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

import numpy as np
import onnx
import onnxruntime as ort

from .sessions import Key, run, session


def interleaved_medians(
    sessions: dict[Key, ort.InferenceSession], feeds: dict[str, np.ndarray], rounds: int
) -> dict[Key, float]:
    """Median seconds per run of each session, runs interleaved so drift hits all of them alike,
    and the order rotated each round: in a fixed order the first session ran 1-2% slower than
    the same model later in the round (caches the others had warmed or evicted)."""
    keys = list(sessions)
    times: dict[Key, list[float]] = {key: [] for key in keys}
    for round_ in range(rounds):
        shift = round_ % max(len(keys), 1)
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            sessions[key].run(None, feeds)
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def balanced_medians(
    models: Mapping[Key, onnx.ModelProto], feeds: dict[str, np.ndarray], threads: int, rounds: Callable[[float], int]
) -> dict[Key, float]:
    """Median seconds per run of each model, side by side (:func:`interleaved_medians`), each
    model in two sessions made in opposite orders and timed as the mean of their medians, after
    a session that is only made and run once: the first session a process makes ran 1-4% slower
    than copies of the same model made after it, whatever the order of the runs (four copies of
    the bundled model read 1.00x, 1.03x, 1.03x, 1.04x), so the model a comparison names first,
    always the original, lost. Six copies read within 0.7% of each other this way, within 2.2%
    with the opposite orders alone. ``rounds`` turns the seconds of one warm run of every session
    into the rounds to run."""
    keys = list(models)
    if not keys:
        return {}
    spare = session(models[keys[0]], optimise=True, threads=threads)  # kept alive while the others run
    run(spare, feeds)
    sessions = {
        (key, copy): session(models[key], optimise=True, threads=threads)
        for copy, order in enumerate((keys, keys[::-1]))
        for key in order
    }
    warm = 0.0
    for sess in sessions.values():
        run(sess, feeds)
        start = time.perf_counter()
        run(sess, feeds)
        warm += time.perf_counter() - start
    medians = interleaved_medians(sessions, feeds, rounds(warm))
    return {key: (medians[key, 0] + medians[key, 1]) / 2 for key in keys}


def median_latency_ms(
    models: dict[str, onnx.ModelProto], feeds: dict[str, np.ndarray], runs: int, threads: int = 1
) -> dict[str, float]:
    """Median wall time per run of each model (:func:`balanced_medians`), ``runs`` runs of each
    in all."""
    seconds = balanced_medians(models, feeds, threads, lambda _: -(-runs // 2))
    return {name: round(1000 * t, 4) for name, t in seconds.items()}
