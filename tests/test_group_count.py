import pytest

from onnx_gkp.group_count import candidate_counts, choose_group_count


def test_candidates_are_bounded_divisors() -> None:
    assert candidate_counts(24, 16) == [1, 2, 3, 4, 6, 8, 12]
    assert candidate_counts(7, 16) == [1, 7]
    assert candidate_counts(64, 4) == [1, 2, 4]


def test_quality_only_takes_the_least_pruned_energy() -> None:
    assert choose_group_count({1: 0.4, 2: 0.35, 4: 0.3, 8: 0.29}, beta=0.0) == 8


def test_a_doubling_must_pay_for_itself() -> None:
    # 2 -> 4 saves 14% (taken), 4 -> 8 saves 3% (not worth a 5% price).
    energies = {1: 0.50, 2: 0.35, 4: 0.30, 8: 0.29}
    assert choose_group_count(energies, beta=0.05) == 4


def test_ties_go_to_the_smaller_count() -> None:
    assert choose_group_count({1: 0.3, 2: 0.3, 4: 0.3}, beta=0.0) == 1
    assert choose_group_count({1: 0.0, 4: 0.0}, beta=0.05) == 1


@pytest.mark.parametrize("beta", [0.0, 0.05, 1.0])
def test_choice_is_a_candidate(beta: float) -> None:
    energies = {1: 0.5, 3: 0.45, 5: 0.2, 15: 0.1}
    assert choose_group_count(energies, beta) in energies
