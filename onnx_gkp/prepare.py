"""What a run settles before any policy: the clock, the Convs it may prune, the check's inputs,
and that the original runs on them at all (bad input is refused here, before any work)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Optional

import numpy as np
import onnx

from .analyse.sites import Analysis, ConvSite, Skip
from .errors import GkpError, ValidationFailed
from .io.samples import Samples
from .limits import WHOLE_LIMIT
from .options import Options
from .runtime.sessions import batch_size, ort_message, random_inputs, session, weight_bytes


class Stopwatch:
    """Wall-clock seconds per pipeline stage, for ``--verbose`` and the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 3)


def prunable(analysis: Analysis, options: Options) -> tuple[list[ConvSite], list[Skip]]:
    """The sites a run may prune, and every Conv left alone with its reason: with a given plan,
    the sites it names; else the sites the plan options can plan (G dividing C_out, something
    to prune)."""
    plan, skipped = options.plan, list(analysis.skipped)
    if plan is not None:
        named = {layer.node_index for layer in plan.layers} | set(plan.whole)
        reasons = {s.node_index: None if s.node_index in named else "left alone by the plan" for s in analysis.sites}
    else:
        limits = options.plan_options
        reasons = {s.node_index: limits.refusal(*s.weight.shape[:2]) for s in analysis.sites}
    sites = [s for s in analysis.sites if reasons[s.node_index] is None]
    skipped += [
        Skip(s.node_index, s.node, "Conv", reasons[s.node_index], s.macs)  # type: ignore[arg-type]
        for s in analysis.sites
        if reasons[s.node_index] is not None
    ]
    if plan is None and options.groups != "auto" and analysis.sites and not sites:
        raise GkpError(f"--groups {options.groups} divides the output channels of no prunable Conv")
    return sites, sorted(skipped, key=lambda s: s.node_index)


def check_feeds(
    model: onnx.ModelProto, analysis: Analysis, data: Optional[Samples], options: Options
) -> dict[str, np.ndarray]:
    """The exactness check's inputs: held-out samples when there are some (up to 8, or the
    model's fixed batch size), else seeded noise with ``input_values`` for the inputs it names."""
    if data is not None:
        return {name: array[: batch_size(model, 8)] for name, array in data.held.items()}
    return random_inputs(model, analysis.input_shapes, options.seed, options.input_values)


def check_runs(model: onnx.ModelProto, feeds: dict[str, np.ndarray], real: bool) -> None:
    """Bad input, before any work: the original loads but cannot run on the check's inputs (an
    input that wants one value, such as silero-vad's sample rate, is fed zeros), so no check of a
    rewrite could pass. A model onnxruntime cannot load is left to the check, which says so; past
    ``WHOLE_LIMIT`` of weights nothing is tried: a whole session is what that avoids."""
    if weight_bytes(model) > WHOLE_LIMIT:
        return
    try:
        loaded = session(model, optimise=False)
    except ValidationFailed:
        return
    try:
        loaded.run(None, feeds)
    except Exception as error:  # onnxruntime raises several unrelated types here
        given = (
            "the held-out samples of --calibration"
            if real
            else ("seeded noise (" + ", ".join(f"{n}: {list(a.shape)} {a.dtype}" for n, a in feeds.items()) + ")")
        )
        hint = (
            "check the samples"
            if real
            else "give --input-value NAME=V for an input that needs one value, or --test-shape"
        )
        raise GkpError(
            f"the original model cannot run on the check's inputs, {given}: {ort_message(error)}; {hint}"
        ) from None
