"""Hostile and awkward inputs: one line and an exit code, nothing written, nothing touched.

Every refusal is tried through the CLI (exit code, exactly one line on stderr, no traceback,
the folder byte for byte as it was: no output, no temporary, input unchanged) and through the
API (``GkpError``).
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, NEW_IR, NEW_OPSET, cli, make_model
from onnx import helper

import onnx_gkp
from onnx_gkp import GkpError, ValidationFailed
from onnx_gkp import cli as cli_module


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (symlinks as their target name) and its bytes."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path)] = os.readlink(path).encode()
        elif path.is_file():
            found[str(path)] = path.read_bytes()
    return found


def chain(folder: Path, name: str = "chain.onnx") -> Path:
    path = folder / name
    onnx.save(make_model(CHAIN, CHAIN_WEIGHTS), path)
    return path


def stamped(folder: Path, ir_version: int, opset: int) -> Path:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    model.ir_version = model.ir_version if ir_version is None else ir_version
    model.opset_import[0].version = opset
    path = folder / "stamped.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def with_external(
    folder: Path, location: Optional[str] = None, length: Optional[int] = None, data_type: int = 0
) -> Path:
    """The chain model with its weights in ``chain.onnx.data``; ``location``/``length`` then
    rewritten in the model file (as a hostile file would carry them)."""
    folder.mkdir(exist_ok=True)
    path = folder / "chain.onnx"
    onnx.save(
        make_model(CHAIN, CHAIN_WEIGHTS), path, save_as_external_data=True, location="chain.onnx.data", size_threshold=0
    )
    model = onnx.load(path, load_external_data=False)
    for tensor in model.graph.initializer:
        tensor.data_type = data_type or tensor.data_type
        for entry in tensor.external_data:
            if entry.key == "location" and location is not None:
                entry.value = location
            if entry.key == "length" and length is not None:
                entry.value = str(length)
    path.write_bytes(model.SerializeToString())
    return path


def custom_op(folder: Path) -> Path:
    model = onnx.parser.parse_model(
        CHAIN.replace('"" : 17]', '"" : 17, "com.example" : 1]').replace("r = Relu(a)", "r = com.example.Mystery (a)")
    )
    model.graph.initializer.extend(make_model(CHAIN, CHAIN_WEIGHTS).graph.initializer)
    path = folder / "custom.onnx"
    onnx.save(model, path)
    return path


def symlink_out(folder: Path) -> Path:
    outside = folder / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"\x00" * 65536)
    path = with_external(folder / "model", location="w.data")
    (folder / "model" / "w.data").symlink_to(outside / "secret.bin")
    return path


def _truncate(path: Path) -> Path:
    data = path.with_name("chain.onnx.data")
    data.write_bytes(data.read_bytes()[:1000])
    return path


def _short_tensor(folder: Path) -> Path:
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]
    return _write(folder / "short.onnx", model.SerializeToString())


@dataclass
class Case:
    """``setup(tmp) -> (IN, OUT)``; ``args`` are CLI options, ``api`` the matching ``prune``
    keywords (None: no API counterpart; OUT cases go through ``save_model`` instead)."""

    setup: Callable[[Path], tuple[Path, Path]]
    code: int
    words: str
    args: list = field(default_factory=list)
    api: Optional[dict] = field(default_factory=dict)
    save: bool = False  # the API refusal comes from save_model(OUT)


def _in(build: Callable[[Path], Path]) -> Callable[[Path], tuple[Path, Path]]:
    return lambda tmp: (build(tmp), tmp / "out.onnx")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _out(make_out: Callable[[Path, Path], Path]) -> Callable[[Path], tuple[Path, Path]]:
    def setup(tmp: Path) -> tuple[Path, Path]:
        source = chain(tmp)
        return source, make_out(tmp, source)

    return setup


def _hard_link(tmp: Path, source: Path) -> Path:
    os.link(source, tmp / "same.onnx")
    return tmp / "same.onnx"


def _symlink(tmp: Path, source: Path) -> Path:
    (tmp / "link.onnx").symlink_to(source)
    return tmp / "link.onnx"


def _edited(folder: Path, name: str, edit: Callable[[np.ndarray], np.ndarray]) -> Path:
    """The chain model with initializer ``name`` replaced by ``edit`` of it."""
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(onnx.numpy_helper.from_array(edit(onnx.numpy_helper.to_array(tensor)).astype(np.float32), name))
    return _write(folder / "edited.onnx", model.SerializeToString())


def reshape_fails(folder: Path) -> Path:
    """Valid for onnx; onnxruntime fails at run time (a Reshape to a shape fed as zeros), and
    would log its own error line before ours."""
    text = CHAIN.replace("(float[1,16,10,10] y)", "(float[1,16,10,10] y, float[7,7] q)", 1).replace(
        "y = Conv <pads=[1,1,1,1]> (r, w2)", "y = Conv <pads=[1,1,1,1]> (r, w2)\n  q = Reshape (y, s7)"
    )
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(make_model(CHAIN, CHAIN_WEIGHTS).graph.initializer)
    model.graph.input.append(helper.make_tensor_value_info("s7", onnx.TensorProto.INT64, [2]))
    return _write(folder / "reshape.onnx", model.SerializeToString())


def string_weight(folder: Path) -> Path:
    """Passes onnx.checker without full_check; a Conv cannot take a string weight."""
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    model.graph.initializer[0].CopyFrom(
        helper.make_tensor("w1", onnx.TensorProto.STRING, [32, 8, 3, 3], [b"w"] * (32 * 8 * 9))
    )
    return _write(folder / "string.onnx", model.SerializeToString())


def huge_value_info(folder: Path) -> Path:
    """A value_info claiming 10^9 x 10^9 for a 10 x 10 tensor."""
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    model.graph.value_info.append(helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, 32, 10**9, 10**9]))
    return _write(folder / "huge_vi.onnx", model.SerializeToString())


def dynamic(folder: Path) -> Path:
    """The chain model with dynamic height and width."""
    model = make_model(
        CHAIN.replace("float[1,8,10,10] x", "float[1,8,H,W] x").replace("float[1,16,10,10] y", "float[1,16,H,W] y"),
        CHAIN_WEIGHTS,
    )
    return _write(folder / "dynamic.onnx", model.SerializeToString())


def huge_input(folder: Path) -> Path:
    """The chain model declaring a 10^6 x 10^6 input (and output): valid, but not to be allocated."""
    model = make_model(CHAIN, CHAIN_WEIGHTS)
    for value in (model.graph.input[0], model.graph.output[0]):
        for axis in (2, 3):
            value.type.tensor_type.shape.dim[axis].dim_value = 10**6
    return _write(folder / "huge.onnx", model.SerializeToString())


def _calibrated(out: str = "out.onnx") -> Callable[[Path], tuple[Path, Path]]:
    """The chain model, calibration samples in ``c.npz`` and OUT named ``out``."""

    def setup(tmp: Path) -> tuple[Path, Path]:
        np.savez(tmp / "c.npz", x=np.zeros((4, 8, 10, 10), np.float32))
        return chain(tmp), tmp / out

    return setup


def _linked(tmp: Path, link: str, target: str) -> Path:
    (tmp / link).symlink_to(target)
    return tmp / "out.onnx"


def _device(path: Path) -> Path:
    """A character device (null's numbers) in the test's folder: never /dev/null itself, which a
    regression run as root would replace with a regular file."""
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, AttributeError):
        pytest.skip("cannot make a device node here")
    return path


def _images(tmp: Path) -> tuple[Path, Path]:
    """The chain model and a folder of calibration "images" (never decoded: refused before)."""
    (tmp / "imgs").mkdir()
    for name in ("a.png", "b.jpg"):
        _write(tmp / "imgs" / name, b"not decoded")
    return chain(tmp), tmp / "out.onnx"


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


CASES = {
    "missing path": Case(lambda tmp: (tmp / "missing.onnx", tmp / "out.onnx"), 2, "no such file"),
    "a directory": Case(lambda tmp: (tmp, tmp / "out.onnx"), 2, "not a file"),
    "empty file": Case(_in(lambda tmp: _write(tmp / "empty.onnx", b"")), 2, "empty file"),
    "random bytes": Case(
        _in(lambda tmp: _write(tmp / "noise.onnx", np.random.default_rng(0).bytes(4096))), 2, "ONNX model"
    ),
    "truncated model": Case(
        _in(lambda tmp: _write(tmp / "cut.onnx", chain(tmp).read_bytes()[:4000])), 2, "not an ONNX model"
    ),
    "a tensor, not a model": Case(
        _in(
            lambda tmp: _write(
                tmp / "tensor.pb", onnx.numpy_helper.from_array(np.ones((4, 4), np.float32), "t").SerializeToString()
            )
        ),
        2,
        "not an ONNX model",
    ),
    "a graph, not a model": Case(
        _in(lambda tmp: _write(tmp / "graph.pb", make_model(CHAIN, CHAIN_WEIGHTS).graph.SerializeToString())),
        2,
        "ONNX model",
    ),
    "IR version newer than onnx": Case(_in(lambda tmp: stamped(tmp, onnx.IR_VERSION + 1, 17)), 2, "invalid ONNX model"),
    "IR version newer than onnxruntime": Case(_in(lambda tmp: stamped(tmp, NEW_IR, 17)), 2, "cannot load IR version"),
    "opset newer than onnxruntime": Case(
        _in(lambda tmp: stamped(tmp, 10, NEW_OPSET)), 2, f"opsets ai.onnx {NEW_OPSET}"
    ),
    "ops onnxruntime cannot run": Case(_in(custom_op), 1, "onnxruntime cannot"),
    "external data, absolute path": Case(_in(lambda tmp: with_external(tmp / "m", "/etc/passwd")), 2, "not relative"),
    "external data, ../ escape": Case(
        _in(lambda tmp: with_external(tmp / "m", "../../../../etc/passwd")), 2, "outside the model's folder"
    ),
    "external data, symlink out": Case(_in(symlink_out), 2, "outside the model's folder"),
    "external data file missing": Case(_in(lambda tmp: with_external(tmp / "m", "gone.data")), 2, "missing"),
    "external data file too short": Case(_in(lambda tmp: _truncate(with_external(tmp / "m"))), 2, "shorter"),
    "external data length not fitting the shape": Case(
        _in(lambda tmp: with_external(tmp / "m", length=4)), 2, "a shape that needs"
    ),
    "external data of an unknown type": Case(
        _in(lambda tmp: with_external(tmp / "m", data_type=99)), 2, "unknown data type"
    ),
    "inline data not fitting the shape": Case(_in(_short_tensor), 2, "does not match"),
    "--ratio above 1": Case(_in(chain), 2, "ratio", ["--ratio", "1.5"], {"ratio": 1.5}),
    "--ratio of 1": Case(_in(chain), 2, "ratio", ["--ratio", "1"], {"ratio": 1.0}),
    "--ratio negative": Case(_in(chain), 2, "ratio", ["--ratio=-0.1"], {"ratio": -0.1}),
    "--groups that divides no layer": Case(_in(chain), 2, "divides", ["--groups", "3"], {"groups": 3}),
    "OUT equal to IN": Case(_out(lambda tmp, source: source), 2, "is an input", save=True),
    "OUT a hard link to IN": Case(_out(_hard_link), 2, "is an input", save=True),
    "OUT a symlink to IN": Case(_out(_symlink), 2, "is an input", save=True),
    "OUT the external data of IN": Case(
        lambda tmp: (with_external(tmp / "m"), tmp / "m" / "chain.onnx.data"), 2, "is an input", save=True
    ),
    "OUT's folder missing": Case(
        _out(lambda tmp, source: tmp / "nowhere" / "out.onnx"), 2, "no such folder", save=True
    ),
    "OUT not writable": Case(_out(lambda tmp, source: Path("/proc/gkp_out.onnx")), 2, "cannot write", save=True),
    "OUT existing without --force": Case(
        _out(lambda tmp, source: _write(tmp / "out.onnx", b"keep me")), 2, "exists", save=True
    ),
    "OUT a folder": Case(_out(lambda tmp, source: tmp), 2, "is a folder", ["--force"], save=True),
    "OUT.data existing without --force": Case(
        _out(lambda tmp, source: _write(tmp / "out.onnx.data", b"keep") and tmp / "out.onnx"),
        2,
        "exists",
        ["--save-external-data"],
        save=True,
    ),
    "--report in a missing folder": Case(
        lambda tmp: (chain(tmp), tmp / "out.onnx"), 2, "no such folder", ["--report", "nowhere/r.json"], None
    ),
    "--threads past 4 per core": Case(
        _in(chain), 2, "threads must be between", ["--threads", "10000"], {"threads": 10000}
    ),
    "--test-shape too large to allocate": Case(
        _in(dynamic),
        2,
        "more than half this machine's memory",
        ["--test-shape", "x:1,8,20000,20000"],
        {"test_shapes": {"x": (1, 8, 20000, 20000)}},
    ),
    "--test-shape past int64": Case(
        _in(dynamic),
        2,
        "more than half this machine's memory",
        ["--test-shape", "x:1,8,999999999999999999999,9"],
        {"test_shapes": {"x": (1, 8, 10**21, 9)}},
    ),
    "input dims too large to allocate": Case(_in(huge_input), 2, "more than half this machine's memory"),
    "NaN in a Conv weight": Case(
        _in(lambda tmp: _edited(tmp, "w1", lambda w: np.where(w > 2, np.nan, w))), 2, "NaN or infinite"
    ),
    "Inf in a Conv bias": Case(
        _in(lambda tmp: _edited(tmp, "b1", lambda b: np.where(b > 1, np.inf, b))), 2, "NaN or infinite"
    ),
    "bias length not C_out": Case(
        _in(lambda tmp: _edited(tmp, "b1", lambda b: b[:30])), 2, "bias of shape [30] for 32"
    ),
    "bias length not C_out, --no-validate": Case(
        _in(lambda tmp: _edited(tmp, "b1", lambda b: b[:30])),
        2,
        "bias of shape [30] for 32",
        ["--no-validate"],
        {"check": False},
    ),
    "weight's input channels not the input's": Case(
        _in(lambda tmp: _edited(tmp, "w1", lambda w: w[:, :6])), 2, "weight for 6 input channels, but its input has 8"
    ),
    "onnxruntime fails at run time": Case(
        _in(reshape_fails), 2, "cannot run on the check's inputs", ["--quality-only"], {}
    ),
    "--seed -1": Case(_in(chain), 2, "seed must be", ["--seed=-1"], {"seed": -1}),
    "--group-cost nan": Case(
        _in(chain), 2, "group_cost must be", ["--group-cost", "nan"], {"group_cost": float("nan")}
    ),
    "--group-cost inf": Case(
        _in(chain), 2, "group_cost must be", ["--group-cost", "inf"], {"group_cost": float("inf")}
    ),
    "--speed-slack nan": Case(
        _in(chain), 2, "speed_slack must be", ["--speed-slack", "nan"], {"speed_slack": float("nan")}
    ),
    "--align 0": Case(_in(chain), 2, "align must be between 1 and 256", ["--align", "0"], {"align": 0}),
    "--min-in-channels -5": Case(
        _in(chain), 2, "min_in_channels must be", ["--min-in-channels=-5"], {"min_in_channels": -5}
    ),
    "--groups in Arabic-Indic digits": Case(_in(chain), 2, "--groups must be", ["--groups", "\u0664"], None),
    "--threads in Arabic-Indic digits": Case(_in(chain), 2, "invalid int value", ["--threads", "\u0664"], None),
    "--ratio in Arabic-Indic digits": Case(_in(chain), 2, "invalid float value", ["--ratio", "\u0660.\u0665"], None),
    "a string initializer feeding a Conv": Case(_in(string_weight), 2, "string.onnx: invalid ONNX model"),
    "value_info contradicting inferred shapes": Case(_in(huge_value_info), 2, "huge_vi.onnx: invalid ONNX model"),
    "--test-shape of another rank": Case(
        _in(chain),
        2,
        "does not fit the input's declared shape [1, 8, 10, 10]",
        ["--test-shape", "x:1,8,10"],
        {"test_shapes": {"x": (1, 8, 10)}},
    ),
    "--test-shape of another channel count": Case(
        _in(dynamic),
        2,
        "does not fit the input's declared shape [1, 8, H, W]",
        ["--test-shape", "x:1,3,10,10"],
        {"test_shapes": {"x": (1, 3, 10, 10)}},
    ),
    # Every written path against every read path and each other (paths.py); relative to cwd = tmp.
    "--cost-cache IN": Case(_in(chain), 2, "is an input", ["--cost-cache", "chain.onnx"], {"cost_cache": "chain.onnx"}),
    "--cost-cache IN's external data": Case(
        lambda tmp: (with_external(tmp / "m"), tmp / "out.onnx"),
        2,
        "is an input",
        ["--cost-cache", "m/chain.onnx.data"],
        {"cost_cache": Path("m/chain.onnx.data")},
    ),
    "--cost-cache the calibration file": Case(
        _calibrated(),
        2,
        "is an input",
        ["--cost-cache", "c.npz", "--calibration", "c.npz"],
        {"cost_cache": Path("c.npz"), "calibration": "c.npz"},
    ),
    "--cost-cache a calibration image": Case(
        _images,
        2,
        "is an input",
        ["--cost-cache", "imgs/a.png", "--calibration", "imgs"],
        {"cost_cache": "imgs/a.png", "calibration": Path("imgs")},
    ),
    "--report a calibration image, --force": Case(
        _images, 2, "is an input", ["--force", "--report", "imgs/b.jpg", "--calibration", "imgs"], None
    ),
    "--report the calibration file": Case(
        _calibrated(), 2, "is an input", ["--report", "c.npz", "--calibration", "c.npz"], None
    ),
    "OUT the calibration file, --force": Case(
        _calibrated("c.npz"), 2, "is an input", ["--force", "--calibration", "c.npz"], None
    ),
    "--report OUT": Case(_in(chain), 2, "written as both OUT and --report", ["--report", "out.onnx"], None),
    "--report existing without --force": Case(
        lambda tmp: (chain(tmp), _write(tmp / "old.json", b"{}") and tmp / "out.onnx"),
        2,
        "exists",
        ["--report", "old.json"],
        None,
    ),
    "--plot OUT": Case(
        lambda tmp: (chain(tmp), tmp / "out.svg"), 2, "written as both OUT and --plot", ["--plot", "out.svg"], None
    ),
    "--report OUT.data": Case(
        _in(chain),
        2,
        "written as both OUT.data and --report",
        ["--save-external-data", "--report", "out.onnx.data"],
        None,
    ),
    "--plot a symlink to --report": Case(
        lambda tmp: (chain(tmp), _linked(tmp, "p.svg", "r.json")),
        2,
        "written as both",
        ["--report", "r.json", "--plot", "p.svg"],
        None,
    ),
    "--cost-cache OUT": Case(_in(chain), 2, "written as both OUT and --cost-cache", ["--cost-cache", "out.onnx"], None),
    "--cost-cache a FIFO": Case(
        lambda tmp: (chain(tmp), _fifo(tmp / "fifo.json") and tmp / "out.onnx"),
        2,
        "not a regular file",
        ["--cost-cache", "fifo.json"],
        {"cost_cache": "fifo.json"},
    ),
    "--cost-cache a device": Case(
        lambda tmp: (chain(tmp), _device(tmp / "dev") and tmp / "out.onnx"),
        2,
        "not a regular file",
        ["--cost-cache", "dev"],
        {"cost_cache": "dev"},
    ),
    "--cost-cache a folder": Case(
        lambda tmp: (chain(tmp), tmp / "out.onnx"), 2, "is a folder", ["--cost-cache", "."], {"cost_cache": "."}
    ),
}


def _skip_unavailable(name: str) -> None:
    if (name == "IR version newer than onnxruntime" and NEW_IR is None) or (
        name == "opset newer than onnxruntime" and NEW_OPSET is None
    ):
        pytest.skip("this onnxruntime loads every version onnx knows")


@pytest.mark.parametrize("name", list(CASES))
def test_cli_refuses_in_one_line_and_writes_nothing(name: str, tmp_path: Path) -> None:
    _skip_unavailable(name)
    case = CASES[name]
    source, out = case.setup(tmp_path)
    before = snapshot(tmp_path)
    result = cli(source, out, *case.args, cwd=tmp_path)  # --report paths are relative to it
    assert result.returncode == case.code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-gkp: error:") and case.words in lines[0], result.stderr
    assert "wrote" not in result.stdout
    assert snapshot(tmp_path) == before, "no output, no temporary, input unchanged"


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.api is not None])
def test_api_raises_gkp_error(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_unavailable(name)
    monkeypatch.chdir(tmp_path)  # relative paths in ``api`` as in the CLI's arguments
    case = CASES[name]
    source, out = case.setup(tmp_path)
    before = snapshot(tmp_path)
    expected = ValidationFailed if case.code == 1 else GkpError
    if case.save:
        model, _ = onnx_gkp.prune(source, ratio=0.25, runtime_aware=False, latency_runs=0)
        with pytest.raises(GkpError, match="exists|no such folder|cannot write|is a folder"):
            onnx_gkp.save_model(model, out, external_data="--save-external-data" in case.args)
    else:
        with pytest.raises(expected, match=re.escape(case.words)):
            onnx_gkp.prune(source, runtime_aware=False, latency_runs=0, **(case.api or {}))
    assert snapshot(tmp_path) == before


RUNTIME_WEIGHT = """
<ir_version: 8, opset_import: ["" : 17]>
computed (float[1,8,10,10] x) => (float[1,16,10,10] y) {
  two = Constant <value = float {2.0}> ()
  w = Mul (w2, two)
  y = Conv <pads=[1,1,1,1]> (x, w)
}
"""
SHARED_WEIGHT = """
<ir_version: 8, opset_import: ["" : 17]>
shared (float[1,16,10,10] x) => (float[1,16,10,10] y) {
  a = Conv <pads=[1,1,1,1]> (x, w)
  r = Relu (a)
  y = Conv <pads=[1,1,1,1]> (r, w)
}
"""
NO_CONV = """
<ir_version: 8, opset_import: ["" : 17]>
plain (float[1,8,10,10] x) => (float[1,8,10,10] y) {
  y = Relu (x)
}
"""
LEFT_WHOLE = {
    "no Conv": (NO_CONV, {}, "the model has no Conv", None),
    "weight computed at run time": (RUNTIME_WEIGHT, {"w2": (16, 8, 3, 3)}, "no Conv could be", "not a constant"),
    "weight shared by two Convs": (SHARED_WEIGHT, {"w": (16, 16, 3, 3)}, "no Conv could be", "shared with 1 other use"),
}


@pytest.mark.parametrize("name", list(LEFT_WHOLE))
def test_nothing_to_prune_is_not_an_error(name: str, tmp_path: Path) -> None:
    """The model is written unchanged in function (exit 0), and the report says why."""
    text, weights, summary, reason = LEFT_WHOLE[name]
    source, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(make_model(text, weights), source)
    result = cli(source, out)
    assert result.returncode == 0, result.stderr
    assert f"nothing was pruned: {summary}" in result.stdout and "exactness passed" in result.stdout
    assert "speed-up" not in result.stdout  # the latency difference of an unchanged model is noise
    _, report = onnx_gkp.prune(source, latency_runs=0)
    assert report.layers == []
    if reason:
        assert reason in result.stdout and all(reason in s.reason for s in report.skipped)
    written = onnx.load(out)
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in onnx.load(source).graph.node]


def test_no_validate_writes_what_onnxruntime_cannot_run(tmp_path: Path) -> None:
    source, out = custom_op(tmp_path), tmp_path / "out.onnx"
    result = cli(source, out, "--no-validate")
    assert result.returncode == 0, result.stderr
    assert "validation: skipped" in result.stdout and onnx.load(out).graph.node


@pytest.mark.parametrize("external", [False, True])
def test_interrupt_while_writing_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, external: bool
) -> None:
    """Ctrl-C (or SIGTERM, turned into the same) between writing and renaming: no OUT, no temporary."""
    source = chain(tmp_path)
    before = snapshot(tmp_path)

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("onnx_gkp.io.model_file.os.replace", interrupted)
    options = ["--no-validate", "--quality-only"] + (["--save-external-data"] if external else [])
    assert cli_module.main([str(source), str(tmp_path / "out.onnx"), *options]) == 130
    assert snapshot(tmp_path) == before


def test_a_bug_is_one_line_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    source = chain(tmp_path)

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli_module, "prune", broken)
    assert cli_module.main([str(source), str(tmp_path / "out.onnx")]) == 3
    assert (
        capsys.readouterr().err == "onnx-gkp: internal error: ZeroDivisionError: division by zero (please report it)\n"
    )
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("killed_at", [1, 2])
def test_a_model_and_its_data_are_never_mismatched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed_at: int
) -> None:
    """Replacing OUT and OUT.data with --force, stopped at each rename: the folder holds the old
    pair, the new pair or no model, never the old model beside the new data."""
    source, out = chain(tmp_path), tmp_path / "out.onnx"
    data = tmp_path / "out.onnx.data"
    options = ["--no-validate", "--quality-only", "--save-external-data", "--force"]
    pairs = []
    for ratio in ("0.25", "0.5"):
        assert cli_module.main([str(source), str(out), "--ratio", ratio, *options]) == 0
        pairs.append((out.read_bytes(), data.read_bytes()))
    assert pairs[0][1] != pairs[1][1]
    calls = []
    real = os.replace

    def stopped(*args: object) -> None:
        calls.append(args)
        if len(calls) == killed_at:
            raise KeyboardInterrupt
        real(*args)

    monkeypatch.setattr("onnx_gkp.io.model_file.os.replace", stopped)
    assert cli_module.main([str(source), str(out), "--ratio", "0.25", *options]) == 130
    assert len(calls) == killed_at
    # The old model is gone before any data is replaced; the data is old or new, alone.
    assert not out.exists() and data.read_bytes() == (pairs[1][1] if killed_at == 1 else pairs[0][1])


def test_cost_table_refuses_a_cache_that_is_not_a_file(tmp_path: Path) -> None:
    from onnx_gkp.cost.table import CostTable

    os.mkfifo(tmp_path / "fifo.json")
    for path in (tmp_path / "fifo.json", tmp_path, _device(tmp_path / "dev")):
        with pytest.raises(GkpError, match="cost cache"):
            CostTable(1, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev", "fifo.json"]
    assert (tmp_path / "dev").is_char_device()


def test_a_conv_without_filters_is_left_whole(tmp_path: Path) -> None:
    text = CHAIN.replace("(float[1,16,10,10] y)", "(float[1,16,10,10] y, float[1,0,10,10] e)").replace(
        "y = Conv <pads=[1,1,1,1]> (r, w2)", "y = Conv <pads=[1,1,1,1]> (r, w2)\n  e = Conv <pads=[1,1,1,1]> (r, w0)"
    )
    source, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(make_model(text, {**CHAIN_WEIGHTS, "w0": (0, 32, 3, 3)}), source)
    result = cli(source, out, "--quality-only", "--ratio", "0.25")
    assert result.returncode == 0, result.stderr
    assert "(Conv): its weight [0, 32, 3, 3] is empty: nothing to prune" in result.stdout
    assert "pruned 2 Conv" in result.stdout


CACHES = {
    "null": "null",
    "a list": "[1, 2]",
    "a number": "3",
    "nested brackets": "[" * 100_000 + "]" * 100_000,
    "values of wrong types": (
        '{"b | G=2 m=2": null, "a | G=1 m=2": "fast", "c | G=4 m=2": [1], "d": {"e": 1}, "f": true}'
    ),
    "zero and negative times": '{"a | G=1 m=2": 0, "b | G=2 m=2": -1, "c | G=4 m=2": Infinity, "d | G=1 m=4": NaN}',
    "not UTF-8": b"\xff\xfe{".decode("latin-1"),
}


@pytest.mark.parametrize("name", list(CACHES))
def test_a_damaged_cost_cache_reads_as_empty(name: str, tmp_path: Path) -> None:
    """A damaged cache is only lost time: read as empty (its bad entries dropped), then rewritten."""
    from onnx_gkp.cost.table import CostTable

    path = tmp_path / "costs.json"
    path.write_text(CACHES[name], encoding="latin-1")
    assert CostTable(1, path).entries == {}


def test_a_cache_of_zero_times_is_measured_again(tmp_path: Path) -> None:
    """Every time of a real cache set to 0 (was ZeroDivisionError): measured again, same choices."""
    source, cache = chain(tmp_path), tmp_path / "costs.json"
    first = cli(source, tmp_path / "a.onnx", "--cost-cache", cache, "--no-validate", "--ratio", "0.25")
    assert first.returncode == 0, first.stderr
    entries = json.loads(cache.read_text())
    cache.write_text(json.dumps({k: 0 if " | G=" in k else v for k, v in entries.items()}))
    again = cli(source, tmp_path / "b.onnx", "--cost-cache", cache, "--no-validate", "--ratio", "0.25")
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert all(v > 0 for k, v in json.loads(cache.read_text()).items() if " | G=" in k)


def test_an_empty_cache_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from onnx_gkp.cost.table import default_cache_path

    monkeypatch.setenv("ONNX_GKP_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / "onnx_gkp" / "conv_costs.json"


def test_quiet_prints_no_progress_bars(tmp_path: Path) -> None:
    """--quiet: the summary on stdout, nothing on stderr (tqdm bars showed with --target-*)."""
    result = cli(chain(tmp_path), tmp_path / "out.onnx", "--target-macs", "0.2", "--quiet")
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_cache_variable_naming_the_model_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``$ONNX_GKP_CACHE`` set to the model: the API and the CLI refuse it before any work."""
    source = chain(tmp_path)
    before = snapshot(tmp_path)
    monkeypatch.setenv("ONNX_GKP_CACHE", str(source))
    with pytest.raises(GkpError, match="is an input"):
        onnx_gkp.prune(source, ratio=0.25, latency_runs=0)
    result = cli(source, tmp_path / "out.onnx", "--ratio", "0.25")
    assert result.returncode == 2 and "is an input" in result.stderr, result.stderr
    assert snapshot(tmp_path) == before
