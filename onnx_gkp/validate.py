"""Run-time validation with onnxruntime: exactness, output drift and side-by-side latency.

* Exactness: the pruned model against the masked reference on the same seeded random inputs,
  both with graph optimisations off, at every graph output and every pruned Conv's output.
  Passes when ``max|pruned - masked| <= max(rtol * max|masked|, atol)`` for each of them
  (``rtol = 1e-4``, ``atol = 1e-5`` by default; ``rtol`` at least 4 ulps of the output
  precision, 3.9e-3 for float16); the reported relative difference is that
  error over ``max(max|masked|, atol / rtol)``, so it passes when at most ``rtol``.
* Drift: cosine similarity, per output, between the original (unmasked) and pruned outputs.
* Speed: median latency of the original and pruned models, optimisations on, one thread,
  runs interleaved so both see the same machine state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from .analyse import resolve_input_shapes
from .errors import ValidationFailed
from .runtime import interleaved_medians, random_inputs, run, session, with_outputs


@dataclass(frozen=True)
class Validation:
    """The verdict and its figures; ``passed`` is what the CLI turns into its exit code."""

    passed: bool
    masked_max_abs_diff: float
    masked_max_rel_diff: float
    output_cosine: dict[str, float]
    latency_ms: dict[str, float]
    onnxruntime: str
    rtol: float
    atol: float


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b))


def median_latency_ms(
    models: dict[str, onnx.ModelProto], feeds: dict[str, np.ndarray], runs: int, threads: int = 1
) -> dict[str, float]:
    """Median wall time per run of each model, interleaved run by run."""
    sessions = {name: session(m, optimise=True, threads=threads) for name, m in models.items()}
    for sess in sessions.values():
        run(sess, feeds)
    return {name: round(1000 * t, 4) for name, t in interleaved_medians(sessions, feeds, runs).items()}


def validate(
    pruned: onnx.ModelProto,
    masked: onnx.ModelProto,
    original: Optional[onnx.ModelProto] = None,
    shapes: Optional[dict[str, tuple[int, ...]]] = None,
    seed: int = 0,
    latency_runs: int = 20,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    probes: Sequence[str] = (),
    threads: int = 1,
    probed: Optional[onnx.ModelProto] = None,
) -> Validation:
    """Check ``pruned`` against ``masked`` (and measure drift and speed against ``original``).

    ``probes`` names inner tensors present in both models (the pruned Convs' outputs keep
    their names) that are compared too: a model whose outputs saturate on random inputs
    (a sigmoid map near zero, say) would otherwise hide a wrong layer. ``probed`` is
    ``pruned`` already exposing them (the rewrite makes it where a tensor only exists in
    permuted order); by default they are added as outputs here.
    """
    if shapes is None:
        shapes = resolve_input_shapes(pruned)
    feeds = random_inputs(pruned, shapes, seed)
    names = [o.name for o in pruned.graph.output]
    got = run(session(probed if probed is not None else with_outputs(pruned, probes), optimise=False), feeds)
    want = run(session(with_outputs(masked, probes), optimise=False), feeds)
    # Outputs rounded to half precision differ by an ulp where the summation order changes.
    rtol = max([rtol] + [4 * float(np.finfo(b.dtype).eps) for b in want if np.issubdtype(b.dtype, np.floating)])
    max_abs, max_rel, passed = 0.0, 0.0, True
    for a, b in zip(got, want):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a64.shape != b64.shape:
            raise ValidationFailed(f"output shapes differ from the masked reference: {a64.shape} vs {b64.shape}")
        diff = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
        scale = max(float(np.max(np.abs(b64))) if b64.size else 0.0, atol / rtol)
        passed &= bool(np.isfinite(a64).all()) and diff <= rtol * scale
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale)
    cosines: dict[str, float] = {}
    latency: dict[str, float] = {}
    if original is not None:
        dense = run(session(original, optimise=False), feeds)
        cosines = {n: round(cosine(a, b), 6) for n, a, b in zip(names, dense, got[: len(names)])}
        if latency_runs > 0:
            latency = median_latency_ms({"original": original, "pruned": pruned}, feeds, latency_runs, threads)
    return Validation(
        passed=passed,
        masked_max_abs_diff=max_abs,
        masked_max_rel_diff=max_rel,
        output_cosine=cosines,
        latency_ms=latency,
        onnxruntime=ort.__version__,
        rtol=rtol,
        atol=atol,
    )
