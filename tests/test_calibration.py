"""Reconstruction from calibration inputs: patches, the grouped ridge solve, and end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import onnx_gkp
from onnx_gkp.errors import GkpError
from onnx_gkp.reconstruct import GroupedRidge, patches, sample_positions

from conftest import CHAIN, CHAIN_WEIGHTS, make_model, run


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
            window = padded[n, :, r * stride : r * stride + 2 * dilation + 1 : dilation, c * stride : c * stride + 2 * dilation + 1 : dilation]
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
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "junk.npz" in result.stderr
    assert not (tmp_path / "out.onnx").exists()
