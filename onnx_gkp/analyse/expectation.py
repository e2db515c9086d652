"""Mean and variance of an activation of a normal variable, per channel, without data.

A BatchNormalization output ``y = scale * x_hat + bias`` has mean ``bias`` and variance
``scale**2`` over the data BN was trained on; what the activations after it make of that
normal is what data-free compensation needs (``compensation.py``). Plain numpy and scipy:
nothing here knows about ONNX.

Piecewise-polynomial activations (Relu, Clip/Relu6, LeakyRelu, HardSigmoid, HardSwish, ...)
have closed forms: on each piece ``[a, b)`` the partial moments of a standard normal obey
``I_0 = Phi(b) - Phi(a)``, ``I_1 = phi(a) - phi(b)``,
``I_n = (n - 1) I_(n-2) + a**(n-1) phi(a) - b**(n-1) phi(b)``, and a polynomial in
``y = mu + s z`` is one in ``z``. Smooth ones (Sigmoid, Tanh, SiLU, Softplus, Gelu, Mish) are integrated
numerically on a fixed grid, within 1e-6 of adaptive quadrature (``tests/test_expectation.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Callable, Optional

import numpy as np
from scipy.special import erf, expit
from scipy.stats import norm

# (lower, upper, coefficients c_0, c_1, ... of the polynomial in y on [lower, upper))
Piece = tuple[float, float, tuple[float, ...]]
SMOOTH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Sigmoid": expit,
    "Tanh": np.tanh,
    "Softplus": lambda y: np.logaddexp(0.0, y),
    "SiLU": lambda y: y * expit(y),
    "Gelu": lambda y: 0.5 * y * (1.0 + erf(y / np.sqrt(2.0))),
    "Mish": lambda y: y * np.tanh(np.logaddexp(0.0, y)),
}
# The trapezoid rule on a fine uniform grid of z: spectrally accurate for analytic integrands
# that decay like the normal density, including steep ones (Tanh of a wide input), where
# Gauss-Hermite with 256 nodes was still 6e-6 off.
_Z = np.linspace(-12.0, 12.0, 4801)
_DENSITY = norm.pdf(_Z) * (_Z[1] - _Z[0])


@dataclass(frozen=True)
class Activation:
    """An activation as its polynomial pieces, or as a smooth function for quadrature."""

    name: str
    pieces: tuple[Piece, ...] = ()
    smooth: Optional[Callable[[np.ndarray], np.ndarray]] = None


def activation(
    name: str, alpha: float = 0.0, beta: float = 0.0, low: float = -np.inf, high: float = np.inf
) -> Optional[Activation]:
    """The activation ``name`` (ONNX spelling, as ``ops.OPS`` names it, plus ``SiLU`` and
    ``HardSigmoidGate`` for the ``x * g(x)`` gates) with its parameters, or None if unknown.

    ``alpha``/``beta`` are LeakyRelu's slope and HardSigmoid's ``alpha * y + beta`` (also for
    ``HardSigmoidGate``, ``y * HardSigmoid(y)``);
    ``low``/``high`` are Clip's bounds.
    """
    inf = np.inf
    if name == "Relu":
        return Activation(name, ((0.0, inf, (0.0, 1.0)),))
    if name == "LeakyRelu":
        return Activation(name, ((-inf, 0.0, (0.0, alpha)), (0.0, inf, (0.0, 1.0))))
    if name == "Clip":
        pieces = [(low, high, (0.0, 1.0))]
        pieces += [(-inf, low, (low,))] if np.isfinite(low) else []
        pieces += [(high, inf, (high,))] if np.isfinite(high) else []
        return Activation(name, tuple(pieces))
    if name == "HardSigmoid" and alpha > 0:
        lo, hi = -beta / alpha, (1.0 - beta) / alpha
        return Activation(name, ((lo, hi, (beta, alpha)), (hi, inf, (1.0,))))
    if name == "HardSwish":  # y * clip(y / 6 + 1/2, 0, 1)
        return activation("HardSigmoidGate", alpha=1.0 / 6.0, beta=0.5)
    if name == "HardSigmoidGate" and alpha > 0:  # y * HardSigmoid(y), as some exports write HardSwish
        lo, hi = -beta / alpha, (1.0 - beta) / alpha
        return Activation(name, ((lo, hi, (0.0, beta, alpha)), (hi, inf, (0.0, 1.0))))
    if name in SMOOTH:
        return Activation(name, smooth=SMOOTH[name])
    return None


def _partial_moments(a: np.ndarray, b: np.ndarray, degree: int) -> list[np.ndarray]:
    """``I_n = E[z**n ; a <= z < b]`` for a standard normal ``z``, ``n = 0 .. degree``."""

    def edge(x: np.ndarray, power: int) -> np.ndarray:  # x**power * phi(x), 0 at +-inf
        finite = np.isfinite(x)
        safe = np.where(finite, x, 0.0)
        return np.where(finite, safe**power * norm.pdf(safe), 0.0)

    moments = [norm.cdf(b) - norm.cdf(a), edge(a, 0) - edge(b, 0)]
    for n in range(2, degree + 1):
        moments.append((n - 1) * moments[n - 2] + edge(a, n - 1) - edge(b, n - 1))
    return moments[: degree + 1]


def _piece_expectation(mean: np.ndarray, std: np.ndarray, piece: Piece, power: int) -> np.ndarray:
    """``E[p(y)**power ; lower <= y < upper]`` for ``y ~ N(mean, std**2)``."""
    lower, upper, coeffs = piece
    poly = np.polynomial.polynomial.polypow(np.asarray(coeffs, dtype=float), power)
    a, b = (lower - mean) / std, (upper - mean) / std
    moments = _partial_moments(a, b, len(poly) - 1)
    total = np.zeros_like(mean)
    for k, c in enumerate(poly):  # c * (mean + std z)**k, expanded in z
        for j in range(k + 1):
            total = total + c * comb(k, j) * mean ** (k - j) * std**j * moments[j]
    return total


def moments(act: Activation, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``act(y)`` for ``y ~ N(mean, var)``, elementwise."""
    mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    std = np.sqrt(np.maximum(var, 1e-24))
    if act.smooth is not None:
        values = act.smooth(mean[..., None] + std[..., None] * _Z)
        first, second = values @ _DENSITY, values**2 @ _DENSITY
    else:
        first = sum(_piece_expectation(mean, std, p, 1) for p in act.pieces)
        second = sum(_piece_expectation(mean, std, p, 2) for p in act.pieces)
    return first, np.maximum(second - first**2, 0.0)
