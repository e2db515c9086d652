"""Closed forms and quadrature of ``expectation.py`` against numeric integration (scipy.quad)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate
from scipy.special import expit
from scipy.stats import norm

from onnx_gkp.analyse.expectation import activation, moments

# name, parameters, the activation written out directly
CASES = [
    ("Relu", {}, lambda y: max(y, 0.0)),
    ("LeakyRelu", {"alpha": 0.1}, lambda y: y if y > 0 else 0.1 * y),
    ("Clip", {"low": 0.0, "high": 6.0}, lambda y: min(max(y, 0.0), 6.0)),
    ("Clip", {"low": -1.0}, lambda y: max(y, -1.0)),
    ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}, lambda y: min(max(0.2 * y + 0.5, 0.0), 1.0)),
    ("HardSwish", {}, lambda y: y * min(max(y / 6 + 0.5, 0.0), 1.0)),
    ("HardSigmoidGate", {"alpha": 0.2, "beta": 0.5}, lambda y: y * min(max(0.2 * y + 0.5, 0.0), 1.0)),
    ("Sigmoid", {}, lambda y: expit(y)),
    ("Tanh", {}, np.tanh),
    ("SiLU", {}, lambda y: y * expit(y)),
    ("Softplus", {}, lambda y: np.logaddexp(0.0, y)),
]
MEANS = np.array([-4.0, -1.3, 0.0, 0.7, 2.5, 7.0])
STDS = np.array([0.05, 1.0, 0.6, 2.0, 3.5, 1.5])


def _numeric(f, mean: float, std: float, power: int) -> float:
    lo, hi = mean - 12 * std, mean + 12 * std
    breaks = [b for b in (-3.0, -1.0, 0.0, 3.0, 6.0, -2.5, 2.5) if lo < b < hi]
    value, _ = integrate.quad(
        lambda y: f(y) ** power * norm.pdf(y, mean, std), lo, hi, points=breaks or None, limit=200
    )
    return value


@pytest.mark.parametrize("name,params,f", CASES, ids=[f"{c[0]}{c[1] or ''}" for c in CASES])
def test_moments_match_numeric_integration(name: str, params: dict, f) -> None:
    mean, var = moments(activation(name, **params), MEANS, STDS**2)
    for i, (mu, s) in enumerate(zip(MEANS, STDS)):
        first = _numeric(f, mu, s, 1)
        second = _numeric(f, mu, s, 2)
        assert mean[i] == pytest.approx(first, abs=1e-6, rel=1e-6)
        assert var[i] == pytest.approx(max(second - first**2, 0.0), abs=1e-6, rel=1e-5)


def test_unknown_activation_is_none() -> None:
    assert activation("Elu") is None
    assert activation("Softmax") is None
