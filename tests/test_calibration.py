"""Reconstruction from calibration inputs: patches, the grouped ridge solve, and end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, make_model, run

import onnx_gkp
from onnx_gkp.errors import GkpError
from onnx_gkp.refit.ridge import GroupedRidge, patches, sample_positions


@pytest.mark.parametrize("stride,dilation,pads", [(1, 1, (1, 1, 1, 1)), (2, 1, (0, 1, 1, 0)), (1, 2, (2, 2, 2, 2))])
def test_patches_are_the_input_windows_at_the_sampled_positions(stride, dilation, pads) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 7, 6))
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out_h = (padded.shape[2] - 2 * dilation - 1) // stride + 1
    out_w = (padded.shape[3] - 2 * dilation - 1) // stride + 1
    where = sample_positions((out_h, out_w), 5, seed=1)
    got = patches(x, (3, 3), (stride, stride), (dilation, dilation), pads, where).reshape(2, 5, 3, 9)
    for n in range(2):
        for i, flat in enumerate(where):
            r, c = divmod(int(flat), out_w)
            window = padded[
                n,
                :,
                r * stride : r * stride + 2 * dilation + 1 : dilation,
                c * stride : c * stride + 2 * dilation + 1 : dilation,
            ]
            np.testing.assert_array_equal(got[n, i], window.reshape(3, 9))


def test_grouped_ridge_equals_a_direct_least_squares_solve_per_group() -> None:
    rng = np.random.default_rng(2)
    c_out, c_in, taps = 6, 5, 4
    weight = rng.normal(size=(c_out, c_in, 2, 2))
    groups, kept = [[0, 3, 4], [1, 2, 5]], [[0, 2, 4], [1, 2, 3]]
    ridge = GroupedRidge(groups, kept, c_in, taps)
    chunks = [(rng.normal(size=(40, c_in, taps)), rng.normal(size=(40, c_out))) for _ in range(3)]
    for patch, target in chunks:
        ridge.add(patch, target)
    new_weight, new_bias = ridge.solve(weight, np.zeros(c_out), damping=0.0)
    patch = np.concatenate([p for p, _ in chunks])
    target = np.concatenate([t for _, t in chunks])
    for filters, channels in zip(groups, kept):
        design = np.hstack([patch[:, channels].reshape(len(patch), -1), np.ones((len(patch), 1))])
        solution = np.linalg.lstsq(design, target[:, filters], rcond=None)[0]
        np.testing.assert_allclose(new_weight[filters][:, channels].reshape(3, -1), solution[:-1].T, atol=1e-10)
        np.testing.assert_allclose(new_bias[filters], solution[-1], atol=1e-10)
        pruned = [c for c in range(c_in) if c not in channels]
        assert not new_weight[np.ix_(filters, pruned)].any()


def test_calibration_brings_the_outputs_back_and_the_rewrite_stays_exact() -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    rng = np.random.default_rng(5)
    mixing = rng.normal(size=(8, 3))  # like real data, channels are correlated: 3 factors behind 8

    def inputs(count: int) -> np.ndarray:
        return np.einsum("cf,nfhw->nchw", mixing, rng.normal(size=(count, 3, 10, 10))).astype(np.float32)

    data, held_out = {"x": inputs(64)}, {"x": inputs(16)}

    def outputs(m):  # CHAIN has batch 1
        return np.concatenate([run(m, {"x": x[None]})[0] for x in held_out["x"]])

    want = outputs(model)
    errors = {}
    for calibration in (None, data):
        pruned, report = onnx_gkp.prune(model, ratio=0.5, groups=2, calibration=calibration, latency_runs=0)
        assert report.validation.passed  # pruned == its masked reference, refitted weights included
        errors[calibration is None] = float(np.abs(outputs(pruned) - want).mean())
    assert errors[False] < 0.5 * errors[True]
    again, _ = onnx_gkp.prune(model, ratio=0.5, groups=2, calibration=data, latency_runs=0)
    assert again.SerializeToString() == pruned.SerializeToString(), "same data, same bytes"
    assert report.layers[0].compensation == "weights and bias refitted on 32 calibration samples"  # 32 more held out
    assert report.options["calibration_samples"] == {"fit": 32, "held_out": 32}


def test_bad_calibration_data_is_a_clear_error(tmp_path: Path) -> None:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    with pytest.raises(GkpError, match="no array named 'x'"):
        onnx_gkp.prune(model, calibration={"y": np.zeros((4, 8, 10, 10), np.float32)})
    with pytest.raises(GkpError, match="rank 3"):
        onnx_gkp.prune(model, calibration={"x": np.zeros((8, 10, 10), np.float32)})
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not an npz")
    result = subprocess.run(
        [sys.executable, "-m", "onnx_gkp", str(path), str(tmp_path / "out.onnx"), "--calibration", str(junk)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "junk.npz" in result.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_the_fit_error_read_off_the_gram_matrix_is_the_residual() -> None:
    """``fit_errors`` (no second pass over the data) equals the squared residual computed directly."""
    rng = np.random.default_rng(3)
    c_out, c_in, taps = 6, 5, 4
    groups, kept = [[0, 3, 4], [1, 2, 5]], [[0, 2, 4], [1, 2, 3]]
    ridge = GroupedRidge(groups, kept, c_in, taps)
    chunks = [(rng.normal(size=(40, c_in, taps)), rng.normal(size=(40, c_out))) for _ in range(3)]
    for patch, target in chunks:
        ridge.add(patch, target)
    patch = np.concatenate([p for p, _ in chunks]).reshape(120, -1)
    target = np.concatenate([t for _, t in chunks])
    pairs = [(rng.normal(size=(c_out, c_in, 2, 2)), rng.normal(size=c_out)) for _ in range(2)]
    for weight, bias in pairs:  # the fit counts the kept kernels only, as the pruned layer does
        for filters, channels in zip(groups, kept):
            weight[np.ix_(filters, [c for c in range(c_in) if c not in channels])] = 0
    got = ridge.fit_errors(*pairs[0], *pairs[1])
    want = [float(np.sum(np.square(patch @ w.reshape(c_out, -1).T + b - target))) for w, b in pairs]
    np.testing.assert_allclose(got, want, rtol=1e-9)


BN_CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
bn_chain (float[1,8,10,10] x) => (float[1,8,10,10] y) {
  n0 = BatchNormalization (x, s0, o0, m0, v0)
  r0 = Relu (n0)
  c1 = Conv <pads=[1,1,1,1]> (r0, w1, b1)
  n1 = BatchNormalization (c1, s1, o1, m1, v1)
  r1 = Relu (n1)
  y = Conv <pads=[1,1,1,1]> (r1, w2)
}
"""


def _bn_chain() -> "onnx.ModelProto":  # noqa: F821
    from onnx import numpy_helper

    weights = {
        "s0": (8,),
        "o0": (8,),
        "m0": (8,),
        "v0": (8,),
        "w1": (16, 8, 3, 3),
        "b1": (16,),
        "s1": (16,),
        "o1": (16,),
        "m1": (16,),
        "v1": (16,),
        "w2": (8, 16, 3, 3),
    }
    model = make_model(BN_CHAIN, weights, seed=4)
    for tensor in model.graph.initializer:
        if tensor.name.startswith("v"):
            tensor.CopyFrom(numpy_helper.from_array(np.abs(numpy_helper.to_array(tensor)) + 0.5, tensor.name))
    return model


def test_a_refit_from_overflowing_samples_keeps_the_masked_weights() -> None:
    """A refit is bounded: samples of 1e37 overflow the second Conv's inputs to
    infinity and the ridge solve gave NaN weights, written into the model and 'validated' against
    a masked reference holding the same NaN. That layer keeps its masked weights and data-free
    compensation instead, and its ``compensation`` says why; the first layer's refit is finite
    and fits better, and is taken."""
    from conftest import feeds_for
    from onnx import numpy_helper

    model = _bn_chain()
    data = {"x": (np.random.default_rng(6).normal(size=(16, 8, 10, 10)) * 1e37).astype(np.float32)}
    pruned, report = onnx_gkp.prune(model, ratio=0.5, groups=1, calibration=data, latency_runs=0)
    assert all(np.isfinite(numpy_helper.to_array(t)).all() for t in pruned.graph.initializer)
    first, second = report.layers
    assert first.compensation == "weights and bias refitted on 8 calibration samples"
    assert second.compensation.startswith("calibration refit not taken: its weights are not finite"), (
        second.compensation
    )
    assert second.compensation.endswith("the masked weights are kept; input mean from BatchNormalization > Relu")
    assert second.bias_delta is not None and report.validation.passed
    assert np.isfinite(run(pruned, feeds_for(model))[0]).all()


def test_a_refit_that_fits_worse_than_the_masked_weights_is_not_taken() -> None:
    """A refit is kept only if it fits the calibration data at least as well as the masked weights
    with their data-free compensation; an over-damped ridge (weights pulled to zero) does not."""
    from onnx_gkp.analyse.sites import analyse
    from onnx_gkp.layer.planner import PlanOptions, plan_layer
    from onnx_gkp.refit.reconstruct import Fit, reconstructed

    model = _bn_chain()
    sites = analyse(model).sites
    plans = [plan_layer(s.weight, PlanOptions(ratio=0.5, groups=1)) for s in sites]
    data = {"x": np.random.default_rng(7).normal(size=(8, 8, 10, 10)).astype(np.float32)}
    kept = reconstructed(model, sites, plans, data)
    assert all(p.declined_refit is None for _, p in kept)
    assert not np.array_equal(kept[0][0].weight, sites[0].weight)
    damped = reconstructed(model, sites, plans, data, fit=Fit(damping=1e9))
    for (site, plan), original in zip(damped, sites):
        assert site.weight is original.weight and plan.declined_refit.startswith(
            "calibration refit not taken: it fits the calibration data worse (relative error "
        ), plan.declined_refit


def test_select_keeps_the_channels_that_reconstruct_the_output() -> None:
    rng = np.random.default_rng(5)
    c_in, taps = 12, 4
    patch = rng.normal(size=(2000, c_in, taps))
    patch[:, 7] = patch[:, 3] + 0.01 * rng.normal(size=(2000, taps))  # 7 repeats 3: one of them is enough
    used = [1, 3, 7, 10]
    target = np.einsum("pct,fct->pf", patch[:, used], rng.normal(size=(6, len(used), taps)))
    ridge = GroupedRidge([[0, 1, 2], [3, 4, 5]], [[0, 1, 2], [0, 1, 2]], c_in, taps)
    ridge.add(patch, target)
    kept = ridge.select(3, damping=1e-6)
    for channels in kept:
        assert {1, 10} <= set(channels.tolist()) and len({3, 7} & set(channels.tolist())) == 1
    weight, bias = ridge.solve(np.zeros((6, c_in, 2, 2)), np.zeros(6), 1e-6)
    residual = np.einsum("pct,fct->pf", patch, weight.reshape(6, c_in, taps)) + bias - target
    assert np.linalg.norm(residual) < 0.01 * np.linalg.norm(target)  # the copy stands in for its original
