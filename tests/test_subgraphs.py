"""Convs whose outputs or weights are read inside If and Loop branches.

The rewrite carries permuted channel orders forward through the main graph only: a reader
inside a branch gets the original order back. Weights a branch shares with the main graph
stay stored once, and the parameter count includes the branches. Every branch is run, not
only the one the validation's inputs take.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import assert_close, cli, make_model, reference_from_report, run

import onnx_gkp
from onnx_gkp.analyse.graph import count_params

HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
branchy (float[1,8,10,10] x, bool c) => (float[1,16,10,10] y, {z}) {{
  a = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r = Relu ({relu_input})
  y = Conv <pads=[1,1,1,1]> (r, w2)
  {body}
}}
"""
IF_READS_A = (
    "z = If (c) <then_branch = g1 () => (float[1,32,10,10] t) { t = Relu (a) }, "
    "else_branch = g2 () => (float[1,32,10,10] e) { e = Neg (a) }>"
)
LOOP_READS_A = (
    "trip = Constant <value = int64 {2}> ()\n  go = Constant <value = bool {1}> ()\n"
    "  z = Loop (trip, go) <body = g (int64 i, bool cin) => (bool cout, float[1,32,10,10] s) "
    "{ cout = Identity (cin)\n s = Relu (a) }>"
)
IF_SHARES_W2 = (
    "z = If (c) <then_branch = g1 () => (float[1,16,10,10] t) { t = Conv <pads=[1,1,1,1]> (r, w2) }, "
    "else_branch = g2 () => (float[1,16,10,10] e) { e = Conv <pads=[1,1,1,1]> (r, w3) }>"
)
WEIGHTS = {"w1": (32, 8, 3, 3), "b1": (32,), "w2": (16, 32, 3, 3), "w3": (16, 32, 3, 3)}

MODELS = {
    # name: (output z, Relu's input, the rest, weights left out)
    "If branches read a pruned Conv's output": ("float[1,32,10,10] z", "a", IF_READS_A, ["w3"]),
    "only If branches read it": ("float[1,32,10,10] z", "x", IF_READS_A, ["w3"]),
    "a Loop body reads it": ("float[2,1,32,10,10] z", "a", LOOP_READS_A, ["w3"]),
    "a weight shared with an If branch": ("float[1,16,10,10] z", "a", IF_SHARES_W2, []),
}


def branchy(name: str) -> onnx.ModelProto:
    z, relu_input, body, unused = MODELS[name]
    text = HEAD.format(z=z, relu_input=relu_input, body=body)
    weights = {k: v for k, v in WEIGHTS.items() if k not in unused}
    if relu_input == "x":  # r has 8 channels then
        weights["w2"] = (16, 8, 3, 3)
    return make_model(text, weights)


@pytest.mark.parametrize("name", list(MODELS))
def test_branch_readers_see_the_original_order(name: str) -> None:
    original = branchy(name)
    pruned, report = onnx_gkp.prune(original, ratio=0.5, runtime_aware=False, latency_runs=0)
    assert report.layers and report.validation.passed
    onnx.checker.check_model(pruned, full_check=True)
    reference = reference_from_report(original, json.loads(report.to_json()))
    x = np.random.default_rng(3).standard_normal((1, 8, 10, 10)).astype(np.float32)
    for branch in (True, False):  # validation feeds zeros to the bool: one branch only
        feeds = {"x": x, "c": np.array(branch)}
        assert_close(run(pruned, feeds), run(reference, feeds))


def test_a_weight_shared_with_a_branch_is_stored_once() -> None:
    original = branchy("a weight shared with an If branch")
    pruned, report = onnx_gkp.prune(original, ratio=0.5, runtime_aware=False, latency_runs=0)
    assert [layer.node for layer in report.layers] == [original.graph.node[0].name]  # w2's Convs: shared
    saved = report.layers[0].params_before - report.layers[0].params_after
    assert report.totals["params_before"] == count_params(original) == sum(int(np.prod(s)) for s in WEIGHTS.values())
    assert report.totals["params_after"] == count_params(pruned) == count_params(original) - saved
    assert pruned.ByteSize() < original.ByteSize()
    branches = [a.g for n in pruned.graph.node if n.op_type == "If" for a in n.attribute]
    assert [t.name for g in branches for t in g.initializer] == []  # w2 and w3 at the top, once, as in the input
    names = [t.name for t in pruned.graph.initializer]
    assert names.count("w2") == names.count("w3") == 1


def test_cli_prunes_a_model_read_in_branches(tmp_path: Path) -> None:
    source, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(branchy("only If branches read it"), source)
    result = cli(source, out, "--quality-only", "--ratio", "0.5")
    assert result.returncode == 0, result.stderr
    assert "pruned 2 Conv" in result.stdout
