"""Hostile and awkward inputs refused: one line and an exit code, nothing written, nothing touched.

Every refusal in the table (bad files and paths, damaged external data, graphs and weights no
Conv can take, bad options, written paths clashing with read ones or each other) is tried
through the CLI (exit code, exactly one line on stderr, no traceback, the folder byte for byte
as it was: no output, no temporary, input unchanged) and through the API (``GkpError``).
The files are built by hostile_inputs.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, NEW_IR, NEW_OPSET, cli, make_model
from hostile_inputs import (
    _device,
    _edited,
    _fifo,
    _short_tensor,
    _truncate,
    _write,
    chain,
    custom_op,
    dynamic,
    huge_input,
    huge_value_info,
    reshape_fails,
    snapshot,
    stamped,
    string_weight,
    symlink_out,
    with_external,
)

import onnx_gkp
from onnx_gkp import GkpError, ValidationFailed


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


def _calibrated(out: str = "out.onnx") -> Callable[[Path], tuple[Path, Path]]:
    """The chain model, calibration samples in ``c.npz`` and OUT named ``out``."""

    def setup(tmp: Path) -> tuple[Path, Path]:
        np.savez(tmp / "c.npz", x=np.zeros((4, 8, 10, 10), np.float32))
        return chain(tmp), tmp / out

    return setup


def _linked(tmp: Path, link: str, target: str) -> Path:
    (tmp / link).symlink_to(target)
    return tmp / "out.onnx"


def _images(tmp: Path) -> tuple[Path, Path]:
    """The chain model and a folder of calibration "images" (never decoded: refused before)."""
    (tmp / "imgs").mkdir()
    for name in ("a.png", "b.jpg"):
        _write(tmp / "imgs" / name, b"not decoded")
    return chain(tmp), tmp / "out.onnx"


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
