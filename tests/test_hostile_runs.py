"""Hostile and awkward conditions that are no refusal.

Models with nothing to prune, or a Conv without filters, are written and exit 0 with the reason
in the report; --no-validate writes what onnxruntime cannot run; a run interrupted (or broken by
a bug) while writing leaves no partial output and never a model beside another's data; a damaged,
special or misplaced cost cache is read as empty, measured again or refused before any work.
The files are built by hostile_inputs.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, cli, make_model
from hostile_inputs import _device, chain, custom_op, snapshot

import onnx_gkp
from onnx_gkp import GkpError
from onnx_gkp import cli as cli_module

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
