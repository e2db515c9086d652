"""External data in and out, and the code path of models past protobuf's 2 GiB (on small models,
with the limit lowered: the >2 GiB model itself is in test_large.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, assert_close, cli, feeds_for, make_model, run

import onnx_gkp


def external_chain(folder: Path) -> Path:
    path = folder / "chain.onnx"
    (folder / "weights").mkdir()
    onnx.save(
        make_model(CHAIN, CHAIN_WEIGHTS),
        path,
        save_as_external_data=True,
        location="weights/chain.bin",
        size_threshold=0,
    )
    return path


def test_external_data_in_and_out_is_byte_identical(tmp_path: Path) -> None:
    source = external_chain(tmp_path)
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.onnx"
        result = cli(source, out, "--ratio", "0.5", "--groups", "2", "--save-external-data")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / f"{name}.onnx.data").stat().st_size > out.stat().st_size
        outputs.append((out.read_bytes(), (tmp_path / f"{name}.onnx.data").read_bytes()))
    assert outputs[0][1] == outputs[1][1]
    mask = os.umask(0)
    os.umask(mask)
    for written in (tmp_path / "a.onnx", tmp_path / "a.onnx.data"):
        assert written.stat().st_mode & 0o777 == 0o666 & ~mask, "an ordinary file, not mkstemp's private one"
    assert outputs[0][0].replace(b"a.onnx.data", b"b.onnx.data") == outputs[1][0]
    stubs = onnx.load(tmp_path / "a.onnx", load_external_data=False).graph.initializer
    assert (
        sum(t.data_location == onnx.TensorProto.EXTERNAL for t in stubs) == 2
    )  # the two weights, not the 128-byte bias
    written = onnx.load(tmp_path / "a.onnx")
    pruned, _ = onnx_gkp.prune(source, ratio=0.5, groups=2, check=False)
    feeds = feeds_for(pruned)
    assert_close(run(written, feeds), run(pruned, feeds), rtol=0)


@pytest.fixture
def low_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """Every model counts as larger than protobuf can serialise."""
    limit = 1000
    monkeypatch.setattr("onnx_gkp.io.model_file.PROTOBUF_LIMIT", limit)
    monkeypatch.setattr("onnx_gkp.runtime.sessions.PROTOBUF_LIMIT", limit)
    return limit


def test_models_past_the_limit_validate_and_go_to_external_data(tmp_path: Path, low_limit: int) -> None:
    source = external_chain(tmp_path)
    pruned, report = onnx_gkp.prune(source, ratio=0.5, groups=2, runtime_aware=False, latency_runs=2)
    assert report.validation.passed and report.validation.latency_ms
    out = tmp_path / "out.onnx"
    onnx_gkp.save_model(pruned, out)  # automatic: past the (lowered) limit
    assert out.with_name("out.onnx.data").exists()
    written = onnx.load(out)
    feeds = feeds_for(pruned)
    assert_close(run(written, feeds), run(pruned, feeds), rtol=0)


def test_digest_and_skeleton_do_not_serialise_the_weights() -> None:
    from onnx_gkp.io.model_file import digest, skeleton

    model = make_model(CHAIN, CHAIN_WEIGHTS)
    light, stripped = skeleton(model)
    assert {t.name for t in stripped} == {"w1", "w2"}  # b1 (128 bytes) stays inline
    assert light.ByteSize() < 1000 < model.ByteSize()
    other = make_model(CHAIN, CHAIN_WEIGHTS, seed=1)
    assert digest(model) == digest(make_model(CHAIN, CHAIN_WEIGHTS)) != digest(other)
    assert np.array_equal(
        onnx.numpy_helper.to_array(stripped[0]), onnx.numpy_helper.to_array(model.graph.initializer[0])
    )
