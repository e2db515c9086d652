"""Data-free compensation: the bias it adds is the expected contribution of what was pruned."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, make_model, run
from onnx import numpy_helper

import onnx_gkp
from onnx_gkp.layer.compensation import bias_delta, tap_coverage


def _conv2d(x: np.ndarray, w: np.ndarray, stride: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    """Direct 2-D convolution, one sample: x [C, H, W], w [F, C, kh, kw], pad = (top, left, bottom, right)."""
    x = np.pad(x, ((0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    f, c, kh, kw = w.shape
    h = (x.shape[1] - kh) // stride + 1
    v = (x.shape[2] - kw) // stride + 1
    out = np.zeros((f, h, v))
    for i in range(h):
        for j in range(v):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, i, j] = np.tensordot(w, patch, axes=3)
    return out


@pytest.mark.parametrize("stride,pads", [(1, (1, 1, 1, 1)), (2, (1, 1, 1, 1)), (2, (0, 0, 1, 1)), (1, (0, 0, 0, 0))])
def test_delta_is_the_spatial_mean_of_the_pruned_contribution_to_a_constant_input(stride, pads) -> None:
    """With every input channel constant at its mean, the pruned kernels' output, averaged over
    positions, is exactly the bias delta: zero padding included."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(6, 5, 3, 3))
    keep = rng.random((6, 5)) < 0.5
    mean = rng.normal(size=5)
    x = np.broadcast_to(mean[:, None, None], (5, 7, 8)).copy()
    lost = _conv2d(x, np.where(keep[:, :, None, None], 0.0, weight), stride, pads)
    coverage = tap_coverage((7, 8), (3, 3), (stride, stride), (1, 1), (pads[0], pads[1], pads[2], pads[3]))
    np.testing.assert_allclose(bias_delta(weight, keep, mean, coverage), lost.mean(axis=(1, 2)), rtol=1e-12)


def test_same_padding_matches_explicit_pads() -> None:
    # 7 wide, kernel 4, stride 2: 4 outputs, total padding 3 -> SAME_UPPER (1, 2), SAME_LOWER (2, 1)
    upper = tap_coverage((7,), (4,), (2,), (1,), None, "SAME_UPPER")
    lower = tap_coverage((7,), (4,), (2,), (1,), None, "SAME_LOWER")
    np.testing.assert_array_equal(upper, tap_coverage((7,), (4,), (2,), (1,), (1, 2)))
    np.testing.assert_array_equal(lower, tap_coverage((7,), (4,), (2,), (1,), (2, 1)))
    np.testing.assert_array_equal(tap_coverage((7,), (3,), None, None, (1, 1), "VALID"), np.ones(3))


def test_pointwise_conv_needs_no_border_correction() -> None:
    np.testing.assert_array_equal(tap_coverage((9, 9), (1, 1)), np.ones((1, 1)))


BN_BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
block (float[N,8,6,6] x) => (float[N,16,6,6] y) {
  b = BatchNormalization (x, scale, shift, mean, var)
  r = Relu(b)
  y = Conv <pads=[1,1,1,1]> (r, w)
}
"""


def _bn_block() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    params = {
        "scale": rng.uniform(0.5, 2.0, 8),
        "shift": rng.normal(0.3, 1.0, 8),
        "mean": rng.normal(0.0, 1.0, 8),
        "var": rng.uniform(0.5, 2.0, 8),
        "w": rng.normal(size=(16, 8, 3, 3)),
    }
    model = onnx.parser.parse_model(BN_BLOCK)
    model.graph.initializer.extend(numpy_helper.from_array(v.astype(np.float32), k) for k, v in params.items())
    return model, params


def test_compensated_output_mean_matches_the_original_on_the_data_bn_was_fit_to() -> None:
    """Inputs drawn from BN's own running statistics: the compensated layer keeps each output
    channel's mean (over samples and positions, zero padding included); uncompensated does not."""
    model, p = _bn_block()
    rng = np.random.default_rng(4)
    x = p["mean"][None, :, None, None] + np.sqrt(p["var"])[None, :, None, None] * rng.standard_normal((4000, 8, 6, 6))
    feeds = {"x": x.astype(np.float32)}
    means = {}
    for compensate in (False, True):
        pruned, report = onnx_gkp.prune(
            model, ratio=0.5, groups=2, compensate=compensate, latency_runs=0, test_shapes={"x": (1, 8, 6, 6)}
        )
        means[compensate] = run(pruned, feeds)[0].mean(axis=(0, 2, 3))
        assert (report.layers[0].bias_delta is not None) == compensate
    original = run(model, feeds)[0]
    error = original.std(axis=(0, 2, 3)) / np.sqrt(4000)  # a loose standard error of the mean
    assert np.all(np.abs(means[True] - original.mean(axis=(0, 2, 3))) < 6 * error)
    assert np.mean(np.abs(means[False] - original.mean(axis=(0, 2, 3))) > 6 * error) > 0.5


def test_report_names_the_statistics_or_why_there_are_none() -> None:
    model, _ = _bn_block()
    _, report = onnx_gkp.prune(model, ratio=0.5, groups=2, latency_runs=0, test_shapes={"x": (1, 8, 6, 6)})
    assert report.layers[0].compensation == "input mean from BatchNormalization > Relu"
    assert report.totals["compensated_layers"] == 1
    _, report = onnx_gkp.prune(make_model(CHAIN, CHAIN_WEIGHTS), ratio=0.5, groups=2, latency_runs=0)
    assert [layer.compensation for layer in report.layers] == [
        "input mean unknown: it is a graph input",
        "input mean unknown: produced by Conv",
    ]
    assert all(layer.bias_delta is None for layer in report.layers)
