"""The --keep search (bisection.py) and the smooth estimate it ranks candidates by (metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_gkp.check.metrics import class_metrics, fidelity, model_estimate
from onnx_gkp.policy.bisection import MAX_EVALUATIONS, evenly_ranked, refined_search, search

LEVELS = [float(i) for i in range(32)]


def _noisy(level: float) -> tuple[float, float]:
    """A smooth estimate falling 0.002 a level; the score a little above it, with a lucky spike
    at level 23 (as top-1 agreement on 128 held-out samples rises and falls by a step or two)."""
    estimate = 1.0 - 0.002 * level
    return (0.984375 if level == 23 else estimate + 0.003), estimate


def test_bisects_on_the_estimate_not_on_a_lucky_score() -> None:
    # Bisected on the score alone, the first probe of the upper half (23) passes by luck and
    # the search ends there, far above where score and estimate fall below the target.
    found, _ = search(LEVELS, lambda level: _noisy(level)[0], keep=0.9695)
    assert found == 23.0
    found, trail = search(LEVELS, _noisy, keep=0.9695)
    assert found == 15.0  # the estimate keeps 0.9695 up to 15
    assert all(isinstance(s, float) for _, s in trail) and len(trail) <= MAX_EVALUATIONS


def test_searches_down_until_the_score_is_measured_to_keep_the_target() -> None:
    # The estimate is optimistic: it passes up to 20, the score only up to 17.
    def score(level: float) -> tuple[float, float]:
        return (0.99 if level <= 17 else 0.96), (0.99 if level <= 20 else 0.96)

    found, trail = search(LEVELS, score, keep=0.98)
    assert found == 17.0
    assert [a for a, _ in trail] == [15.0, 23.0, 19.0, 21.0, 20.0, 17.0, 18.0], "bisected on the estimate, then on both"
    assert dict(trail)[found] >= 0.98


def test_an_estimate_optimistic_by_many_rungs_still_finds_a_pruning_plan() -> None:
    # MobileNetV2 at --keep 0.8: the estimate passed far above where the score did; stepping
    # down one rung at a time ran out of evaluations and left every layer whole.
    def score(level: float) -> tuple[float, float]:
        return (0.99 if level <= 5 else 0.96), (0.99 if level <= 28 else 0.96)

    found, trail = search(LEVELS, score, keep=0.98)
    assert found == 5.0 and len(trail) <= MAX_EVALUATIONS
    looser = [search(LEVELS, score, keep=k)[0] for k in (0.985, 0.98, 0.97)]
    assert looser == [5.0, 5.0, 5.0]


def test_the_answer_is_always_measured_to_keep_the_target() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        noise = rng.normal(0, 0.01, len(LEVELS))
        bias = rng.normal(0, 0.01)

        def score(level: float) -> tuple[float, float]:
            estimate = 1.0 - 0.003 * level
            return float(np.clip(estimate + bias + noise[int(level)], 0, 1)), estimate

        keep = float(rng.uniform(0.9, 1.0))
        found, trail = search(LEVELS, score, keep=keep)
        assert len(trail) <= MAX_EVALUATIONS and len({a for a, _ in trail}) == len(trail), "each level measured once"
        if found is not None:
            assert dict(trail)[found] >= keep and score(found)[1] >= keep


def test_monotone_in_keep_when_the_estimate_is() -> None:
    found = [search(LEVELS, _noisy, keep=k)[0] for k in (0.999, 0.99, 0.98, 0.97, 0.96, 0.95)]
    numbers = [-1.0 if f is None else f for f in found]
    assert numbers == sorted(numbers), f"a looser target never prunes less: {found}"


def test_a_plain_score_is_its_own_estimate() -> None:
    levels = [0.001 * i for i in range(1, 101)]
    found, trail = search(levels, lambda level: 1.0 - level, keep=0.95)
    assert found == pytest.approx(0.05) and len(trail) <= 8
    assert search(levels, lambda level: 0.5, keep=0.95)[0] is None


def test_soft_agreement_counts_samples_that_move_towards_a_flip() -> None:
    logits = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0], [3.0, 1.0, 0.0]])
    assert class_metrics(logits, logits)["top1_soft"] == 1.0
    nearer = logits.copy()
    nearer[3] = [2.0, 1.8, 0.0]  # still agrees, closer to a flip
    moved = class_metrics(logits, nearer)
    assert moved["top1"] == 1.0 and moved["top1_soft"] < 1.0
    flipped = logits.copy()
    flipped[3] = [1.0, 3.0, 0.0]
    worse = class_metrics(logits, flipped)
    assert worse["top1"] == 0.75 and worse["top1_soft"] < moved["top1_soft"]
    assert 0.0 <= worse["top1_soft"] <= 1.0


def test_model_estimate_reads_the_soft_agreement_only_for_top1() -> None:
    logits = np.array([[4.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
    nearer = np.array([[4.0, 0.0, 0.0], [2.0, 1.8, 0.0]])
    maps = np.ones((2, 3, 4, 4), np.float32)
    figures = fidelity(["p", "m"], [logits, maps], [nearer, maps * 2])
    assert figures["p"]["score"] == 1.0 and figures["p"]["top1_soft"] < 1.0
    assert model_estimate(figures) == pytest.approx(figures["p"]["top1_soft"])  # the maps' cosine is 1
    five = fidelity(["p"], [logits], [nearer], {"p": "top5"})
    assert model_estimate(five) == five["p"]["score"] == 1.0
    assert model_estimate(fidelity(["p"], [logits], [nearer], {"p": "ignore"})) is None


def test_evenly_ranked_rungs_keep_both_ends() -> None:
    ladder = [0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert evenly_ranked(ladder, 4) == [0.01, 0.04, 0.3, 0.6]
    assert evenly_ranked(ladder, 20) == ladder


def test_refined_search_finds_the_allowance_between_two_rungs() -> None:
    # MobileNetV2 with BN folded: --keep 0.8 stopped on the rung --keep 0.85 did (top-1 0.898),
    # because the next rung fell below 0.8; the ladder's values in between were never tried.
    ladder = [float(i) for i in range(300)]

    def score(level: float) -> tuple[float, float]:
        value = 1.0 - 0.001 * level
        return value, value

    coarse, _ = search(evenly_ranked(ladder, 32), score, keep=0.8)
    found, trail = refined_search(ladder, score, keep=0.8)
    assert coarse == 193.0 and found == 200.0, "the coarse rungs are 9-10 apart; the refined answer is exact"
    assert dict(trail)[found] >= 0.8 and len(trail) <= 2 * MAX_EVALUATIONS
    assert len({a for a, _ in trail}) == len(trail), "each level measured once"


def test_refined_search_answer_is_always_measured_to_keep_the_target() -> None:
    rng = np.random.default_rng(1)
    ladder = sorted(rng.uniform(0, 1, 250).tolist())
    for trial in range(100):
        noise = dict(zip(ladder, rng.normal(0, 0.01, len(ladder))))
        keep = float(rng.uniform(0.5, 1.0))

        def score(level: float) -> tuple[float, float]:
            estimate = 1.0 - 0.5 * level
            return float(np.clip(estimate + noise[level], 0, 1)), estimate

        found, trail = refined_search(ladder, score, keep=keep)
        coarse, _ = search(evenly_ranked(ladder, 32), score, keep=keep)
        if found is None:
            assert coarse is None
        else:
            assert dict(trail)[found] >= keep and score(found)[1] >= keep
            assert coarse is not None and found >= coarse, "refining never prunes less than the coarse search"


def test_refined_search_with_nothing_kept_leaves_every_layer_whole() -> None:
    found, trail = refined_search([0.1 * i for i in range(1, 100)], lambda level: (0.5, 0.5), keep=0.9)
    assert found is None and 0 < len(trail) <= MAX_EVALUATIONS
