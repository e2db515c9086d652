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

How close the pruned model stays to the *original* is fidelity, measured on held-out real
inputs (``fidelity.py``), never on noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from .analyse import resolve_input_shapes
from .errors import ValidationFailed
from .runtime import median_latency_ms, random_inputs, run, session, with_outputs


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
    feeds: Optional[dict[str, np.ndarray]] = None,
    real: bool = False,
) -> Validation:
    """Check ``pruned`` against ``masked`` on ``feeds`` (default: seeded noise at ``shapes``), and
    time ``pruned`` against ``original``.

    ``probes`` names inner tensors present in both models (the pruned Convs' outputs keep
    their names) that are compared too: a model whose outputs saturate (a sigmoid map near
    zero, say) would otherwise hide a wrong layer. ``probed`` is ``pruned`` already exposing
    them (the rewrite makes it where a tensor only exists in permuted order); by default they
    are added as outputs here. ``real`` says the feeds are real samples (for the record).
    """
    count = len(pruned.graph.output)
    if shapes is None:
        shapes = resolve_input_shapes(pruned)
    noise = random_inputs(pruned, shapes, seed)
    feeds = noise if feeds is None else feeds
    got = run(session(probed if probed is not None else with_outputs(pruned, probes), optimise=False), feeds)
    want = run(session(with_outputs(masked, probes), optimise=False), feeds)
    # Outputs rounded to half precision differ by an ulp where the summation order changes.
    rtol = max([rtol] + [4 * float(np.finfo(b.dtype).eps) for b in want if np.issubdtype(b.dtype, np.floating)])
    inner = max([_magnitude(b) for b in want[count:]], default=0.0)
    max_abs, max_rel, passed = 0.0, 0.0, True
    for index, (a, b) in enumerate(zip(got, want)):
        diff, same = _difference(a, b)
        scale = max(_magnitude(b), atol / rtol, inner if index < count else 0.0)
        passed &= same and diff <= rtol * scale
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale)
    latency: dict[str, float] = {}
    if original is not None and latency_runs > 0:
        timing = {name: array[: shapes[name][0]] for name, array in feeds.items()} if real else noise
        latency = median_latency_ms({"original": original, "pruned": pruned}, timing, latency_runs, threads)
    return Validation(
        passed=passed,
        masked_max_abs_diff=max_abs,
        masked_max_rel_diff=max_rel,
        inputs="held-out samples" if real else "seeded noise",
        latency_ms=latency,
        onnxruntime=ort.__version__,
        rtol=rtol,
        atol=atol,
    )
