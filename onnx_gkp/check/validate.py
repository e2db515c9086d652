"""Run-time validation with onnxruntime: exactness and side-by-side latency.

* Exactness: the pruned model against the masked reference on the same inputs (held-out real
  samples when there are some, else seeded noise), both with graph optimisations off, at every
  graph output and every pruned Conv's output. Passes when
  ``max|pruned - masked| <= rtol * scale`` for each of them (``rtol = 1e-4`` by default, at least
  4 ulps of the output precision, 3.9e-3 for float16), where ``scale`` is
  ``max(max|masked|, atol / rtol)`` for a probed Conv output; for a graph output it is also at
  least the largest probed Conv output, so an output squashed by a final Clip or Sigmoid is held to
  the precision of the Convs that feed it rather than failed for their rounding. Non-finite values
  in the same places with the same values in both models are equal; anywhere else they fail.
* Speed: median latency of the original and pruned models, optimisations on, ``threads``
  threads, runs interleaved so both see the same machine state.

Past ``WHOLE_LIMIT`` of weights the two models of the exactness check are run a part at a time
(``sessions.run_in_parts``: the same values, never a whole model in onnxruntime), one model after
the other, and speed is not measured: timing needs both whole models in onnxruntime at once.

How close the pruned model stays to the *original* is fidelity, measured on held-out real
inputs (``metrics.py``), never on noise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ..analyse.shapes import resolve_input_shapes
from ..errors import ValidationFailed
from ..limits import WHOLE_LIMIT
from ..runtime.sessions import (
    Stubs,
    Unsplittable,
    filled,
    is_stub,
    random_inputs,
    run,
    run_in_parts,
    session,
    with_outputs,
)
from ..runtime.timing import median_latency_ms


@dataclass(frozen=True)
class Validation:
    """The verdict and its figures; ``passed`` is what the CLI turns into its exit code."""

    passed: bool
    masked_max_abs_diff: float
    masked_max_rel_diff: float
    inputs: str
    latency_ms: dict[str, float]
    onnxruntime: str
    rtol: float
    atol: float
    latency_note: str = ""  # why latency_ms is empty, when validation ran


def _difference(a: np.ndarray, b: np.ndarray) -> tuple[float, bool]:
    """Largest finite |a - b|, and whether the non-finite values agree in place and value."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        raise ValidationFailed(f"output shapes differ from the masked reference: {a64.shape} vs {b64.shape}")
    finite = np.isfinite(a64) & np.isfinite(b64)
    same = bool(np.array_equal(a64[~finite], b64[~finite], equal_nan=True))
    return (float(np.max(np.abs(a64[finite] - b64[finite]))) if finite.any() else 0.0), same


def _magnitude(b: np.ndarray) -> float:
    b64 = np.asarray(b, np.float64)
    finite = b64[np.isfinite(b64)]
    return float(np.max(np.abs(finite))) if finite.size else 0.0


@dataclass(frozen=True)
class Inputs:
    """What the check runs on: ``feeds``, or seeded noise at ``shapes`` (default: the model's);
    ``real`` says the feeds are real samples (for the record, and timed at the checked batch)."""

    feeds: Optional[dict[str, np.ndarray]] = None
    shapes: Optional[dict[str, tuple[int, ...]]] = None
    seed: int = 0
    real: bool = False


@dataclass(frozen=True)
class Exposed:
    """What the rewrite made to check with: ``probed`` is the pruned model exposing the probes
    (where a tensor only exists in permuted order), ``masked_stubs`` fill the masked model's
    stubs, and with ``part_bytes`` both run a part of at most that many weight bytes at a time."""

    probed: Optional[onnx.ModelProto] = None
    masked_stubs: Optional[Stubs] = None
    part_bytes: Optional[int] = None


RTOL, ATOL = 1e-4, 1e-5


def validate(
    pruned: onnx.ModelProto,
    masked: onnx.ModelProto,
    original: Optional[onnx.ModelProto] = None,
    *,
    inputs: Inputs = Inputs(),
    probes: Sequence[str] = (),
    exposed: Exposed = Exposed(),
    latency_runs: int = 20,
    threads: int = 1,
) -> Validation:
    """Check ``pruned`` against ``masked`` on ``inputs``, and time ``pruned`` against ``original``.

    ``probes`` names inner tensors present in both models (the pruned Convs' outputs keep
    their names) that are compared too: a model whose outputs saturate (a sigmoid map near
    zero, say) would otherwise hide a wrong layer. Unless ``exposed.probed`` already exposes
    them, they are added as outputs here. ``exposed.probed`` and ``masked`` may hold stubs
    (``load.STRIPPED``): the probed model's are filled from ``pruned``, ``masked``'s from
    ``exposed.masked_stubs``. With ``exposed.part_bytes`` both are run a part at a time, one
    after the other, and not timed.
    """
    shapes = resolve_input_shapes(pruned) if inputs.shapes is None else inputs.shapes
    feeds = random_inputs(pruned, shapes, inputs.seed) if inputs.feeds is None else inputs.feeds
    pruned_stubs = {t.name: functools.partial(onnx.numpy_helper.to_array, t) for t in pruned.graph.initializer}
    got, want = _outputs(
        pruned, exposed.probed, pruned_stubs, masked, exposed.masked_stubs or {}, probes, feeds, exposed.part_bytes
    )
    max_abs, max_rel, passed, rtol = _compared(got, want, len(pruned.graph.output))
    latency: dict[str, float] = {}
    note = ""
    if exposed.part_bytes is not None:
        limit = f"{WHOLE_LIMIT / 2**30:g} GiB"
        note = f"not measured: timing holds both whole models in onnxruntime, and their weights pass {limit}"
    elif original is not None and latency_runs > 0:
        timing = {name: array[: shapes[name][0]] for name, array in feeds.items()} if inputs.real else feeds
        latency = median_latency_ms({"original": original, "pruned": pruned}, timing, latency_runs, threads)
    return Validation(
        passed=passed,
        masked_max_abs_diff=max_abs,
        masked_max_rel_diff=max_rel,
        inputs="held-out samples" if inputs.real else "seeded noise",
        latency_ms=latency,
        onnxruntime=ort.__version__,
        rtol=rtol,
        atol=ATOL,
        latency_note=note,
    )


def _compared(got: list[np.ndarray], want: list[np.ndarray], count: int) -> tuple[float, float, bool, float]:
    """The largest absolute and relative differences, whether all are within tolerance, and the
    tolerance; the first ``count`` are the model's outputs, the rest its probes."""
    # Outputs rounded to half precision differ by an ulp where the summation order changes.
    rtol = max([RTOL] + [4 * float(np.finfo(b.dtype).eps) for b in want if np.issubdtype(b.dtype, np.floating)])
    inner = max([_magnitude(b) for b in want[count:]], default=0.0)
    max_abs, max_rel, passed = 0.0, 0.0, True
    for index, (a, b) in enumerate(zip(got, want)):
        diff, same = _difference(a, b)
        scale = max(_magnitude(b), ATOL / rtol, inner if index < count else 0.0)
        passed &= same and diff <= rtol * scale
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale)
    return max_abs, max_rel, passed, rtol


def _outputs(
    pruned: onnx.ModelProto,
    probed: Optional[onnx.ModelProto],
    pruned_stubs: Stubs,
    masked: onnx.ModelProto,
    masked_stubs: Stubs,
    probes: Sequence[str],
    feeds: dict[str, np.ndarray],
    part_bytes: Optional[int],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The outputs then the probes of the pruned and of the masked model, one model after the
    other (a part at a time with ``part_bytes``, where every value between parts is a tensor)."""
    if part_bytes is not None:
        try:
            extra = () if probed is not None else probes
            got = run_in_parts(probed if probed is not None else pruned, feeds, pruned_stubs, part_bytes, extra)
            return got, run_in_parts(masked, feeds, masked_stubs, part_bytes, probes)
        except Unsplittable:
            pass
    got = run(
        session(_filled(probed, pruned_stubs) if probed is not None else with_outputs(pruned, probes), optimise=False),
        feeds,
    )
    want = run(session(_filled(with_outputs(masked, probes), masked_stubs), optimise=False), feeds)
    return got, want


def _filled(model: onnx.ModelProto, stubs: Stubs) -> onnx.ModelProto:
    """``model`` with its stubs filled (itself when it has none)."""
    return filled(model, stubs) if any(is_stub(t) for t in model.graph.initializer) else model
