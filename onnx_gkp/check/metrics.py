"""What the pruned model still does, measured on held-out real inputs: one metric family per output kind.

* Class scores (a ``[N, C]`` float output, ``C >= 2``): top-1 agreement (the pruned model's
  top class is the original's), top-5 agreement (the original's top class is among the pruned
  model's five best) and the mean ``KL(original || pruned)`` of the class distributions
  (softmax of the scores, unless they already are probabilities); and ``top1_soft``, one less
  the mean change of the probability of the original's top class, a smooth stand-in for
  top-1 agreement that ``--keep`` ranks candidates by (``bisection.py``, :func:`model_estimate`).
* Dense outputs (maps, boxes, images, audio): relative L2 error ``||p - o|| / ||o||``, SNR in dB
  ``10 log10(||o||^2 / ||p - o||^2)`` and the cosine of all samples' outputs at once (a
  per-sample mean is noise on samples whose output is about zero: a text detector's map of a
  crop without text made PP-OCR's INT8 model read 0.48 where it reads 0.86 at once).
* Other outputs (integers, booleans): the fraction of equal elements.

Each output has a *target metric* (``top1``, ``top5`` or ``cosine`` by kind; ``match`` for
non-float outputs; ``ignore`` to leave it out), whose value is its *score*; a model's score is
its least output score. Non-finite values where both models have them count as equal; a
non-finite value in one model only counts as a miss. Plain numpy: nothing here knows about ONNX.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy.stats import binomtest

TARGET_METRICS = ("top1", "top5", "cosine", "match", "ignore")


def kind_of(output: np.ndarray) -> str:
    """``classes``, ``dense`` or ``exact`` for an output batch (samples along the first axis)."""
    if not np.issubdtype(output.dtype, np.floating):
        return "exact"
    return "classes" if output.ndim == 2 and output.shape[1] >= 2 else "dense"


def default_metric(kind: str) -> str:
    return {"classes": "top1", "dense": "cosine", "exact": "match"}[kind]


def _are_distributions(scores: np.ndarray) -> bool:
    return bool(np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3))


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows that already are distributions stay as they are; others go through a softmax."""
    return scores if _are_distributions(scores) else np.exp(_log_probabilities(scores))


def _log_probabilities(scores: np.ndarray) -> np.ndarray:
    """Logs of the class distributions: a log-softmax, exact where a softmax underflows."""
    scores = scores.astype(np.float64)
    if _are_distributions(scores):
        return np.log(np.maximum(scores, 1e-30))
    return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)


def kl_divergence(original: np.ndarray, pruned: np.ndarray) -> float:
    """Mean ``KL(original || pruned)`` of the class distributions of rows of scores. A row's KL
    is never negative; rounding can make a tiny one so (printed as -0.00), so each is clipped at 0."""
    log_o, log_p = _log_probabilities(original), _log_probabilities(pruned)
    return float(np.mean(np.maximum(np.sum(np.exp(log_o) * (log_o - log_p), axis=1), 0.0))) if len(log_o) else 0.0


def class_metrics(original: np.ndarray, pruned: np.ndarray) -> dict[str, float]:
    o, p = _finite(original), _finite(pruned)
    top = o.argmax(axis=1)
    five = np.argsort(-p, axis=1, kind="stable")[:, :5]
    po, pp = probabilities(o), probabilities(p)
    rows = np.arange(len(top))
    return {
        "top1": float(np.mean(p.argmax(axis=1) == top)),
        "top5": float(np.mean((five == top[:, None]).any(axis=1))),
        "kl": kl_divergence(o, p),
        "top1_soft": float(1.0 - np.mean(np.abs(po[rows, top] - pp[rows, top]))) if len(top) else 1.0,
    }


def dense_metrics(original: np.ndarray, pruned: np.ndarray) -> dict[str, float]:
    both = ~np.isfinite(original) & ~np.isfinite(pruned) & (np.isnan(original) == np.isnan(pruned))
    o = np.where(both, 0.0, original.astype(np.float64))
    p = np.where(both, 0.0, pruned.astype(np.float64))
    if not (np.isfinite(o).all() and np.isfinite(p).all()):
        return {"relative_l2": float("inf"), "snr_db": float("-inf"), "cosine": 0.0}
    error, signal = float(np.sum((p - o) ** 2)), float(np.sum(o**2))
    norms = float(np.linalg.norm(o) * np.linalg.norm(p))
    cosine = float(np.sum(o * p)) / norms if norms > 0 else float(np.array_equal(o, p))
    return {
        "relative_l2": float(np.sqrt(error / signal)) if signal > 0 else float(error > 0) * float("inf"),
        "snr_db": float("inf") if error == 0 else float(10 * np.log10(signal / error)) if signal > 0 else float("-inf"),
        "cosine": cosine,
    }


def output_fidelity(original: np.ndarray, pruned: np.ndarray, metric: Optional[str] = None) -> dict[str, object]:
    """One output's figures, its target metric and its score (None when ignored)."""
    kind = kind_of(original)
    if kind == "classes":
        figures: dict[str, float] = class_metrics(original, pruned)
        figures["cosine"] = dense_metrics(original, pruned)["cosine"]
    elif kind == "dense":
        figures = dense_metrics(original, pruned)
    else:
        figures = {"match": float(np.mean(original == pruned)) if original.size else 1.0}
    metric = metric or default_metric(kind)
    if metric not in TARGET_METRICS or (metric != "ignore" and metric not in figures):
        raise ValueError(
            f"metric {metric!r} does not apply to a {kind} output (choose from {', '.join(sorted(figures))}, ignore)"
        )
    score = None if metric == "ignore" else figures[metric]
    rounded = {k: _round(v) for k, v in figures.items()}
    interval = None if score is None else [_round(v) for v in score_interval(original, pruned, metric, score)]
    return {
        "kind": kind,
        **rounded,
        "metric": metric,
        "score": None if score is None else _round(score),
        "interval": interval,
    }


Z95 = 1.959964  # the normal quantile of a two-sided 95% interval
BOOTSTRAP = 1000  # resamples of the held-out samples for an interval without a closed form


def score_interval(original: np.ndarray, pruned: np.ndarray, metric: str, score: float) -> tuple[float, float]:
    """A 95% interval for the score on unseen inputs like the held-out ones: Wilson's for an
    agreement rate over the samples, a seeded percentile bootstrap over the samples otherwise."""
    count = len(original)
    if metric in ("top1", "top5"):
        return wilson(round(score * count), count)
    if count < 2:
        return score, score
    rows = np.random.default_rng(0).integers(0, count, size=(BOOTSTRAP, count))
    weights = np.stack([np.bincount(r, minlength=count) for r in rows]).astype(np.float64)
    if metric == "cosine":
        o = np.nan_to_num(original.reshape(count, -1).astype(np.float64))
        p = np.nan_to_num(pruned.reshape(count, -1).astype(np.float64))
        with np.errstate(over="ignore", invalid="ignore"):  # overflowing outputs: the score stands in
            dot, oo, pp = (np.sum(a * b, axis=1) for a, b in ((o, p), (o, o), (p, p)))
            norms = np.sqrt((weights @ oo) * (weights @ pp))
            values = np.divide(weights @ dot, norms, out=np.full(BOOTSTRAP, score), where=norms > 0)
    else:  # match: the share of equal elements, per sample
        values = weights @ np.mean((original == pruned).reshape(count, -1), axis=1) / count
    low, high = np.percentile(values, [2.5, 97.5])
    return float(min(low, score)), float(max(high, score))


def wilson(successes: int, count: int) -> tuple[float, float]:
    """Wilson's 95% score interval for a rate of ``successes`` in ``count``."""
    if count == 0:
        return 0.0, 1.0
    interval = binomtest(successes, count).proportion_ci(0.95, method="wilson")
    return float(interval.low), float(interval.high)


def samples_to_show(target: float) -> int:
    """The fewest held-out samples whose Wilson lower bound can reach ``target`` (all agreeing)."""
    return int(np.ceil(Z95**2 * target / (1 - target))) if target < 1 else 0


def model_score(fidelity: dict[str, dict[str, object]]) -> Optional[float]:
    """The least score over the outputs not ignored (None when every output is ignored)."""
    scores = [f["score"] for f in fidelity.values() if f["score"] is not None]
    return min(scores) if scores else None  # type: ignore[type-var]


def model_estimate(fidelity: dict[str, dict[str, object]]) -> Optional[float]:
    """The least over the outputs not ignored of a smooth estimate of the score: ``top1_soft``
    where the metric is top-1 agreement, else the score itself (cosine already moves smoothly).

    On 128 held-out samples top-1 agreement moves in steps of 0.8% and, from one candidate to
    the next, by a step or two either way; a sample that moves towards a flip without flipping
    counts in ``top1_soft`` in part. It is the lower of the two where pruning moves the
    probabilities without flipping (most of the time): ranked by it, the search lands on
    candidates whose agreement on unseen inputs keeps the target more often (``docs/results.md``)."""
    scores = [
        f["top1_soft"] if f["metric"] == "top1" and "top1_soft" in f else f["score"]
        for f in fidelity.values()
        if f["score"] is not None
    ]
    return min(scores) if scores else None  # type: ignore[type-var]


def fidelity(
    names: Sequence[str],
    original: Sequence[np.ndarray],
    pruned: Sequence[np.ndarray],
    metrics: Optional[dict[str, str]] = None,
) -> dict[str, dict[str, object]]:
    """Per output name, :func:`output_fidelity`."""
    metrics = metrics or {}
    return {n: output_fidelity(o, p, metrics.get(n)) for n, o, p in zip(names, original, pruned)}


def _finite(scores: np.ndarray) -> np.ndarray:
    """Class scores with NaN as the least score, so a NaN row never agrees by accident."""
    return np.nan_to_num(scores.astype(np.float64), nan=-1e300, posinf=1e300, neginf=-1e300)


def _round(value: float) -> float:
    return float(value) if not np.isfinite(value) else float(round(value, 6))
