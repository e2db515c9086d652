"""Channel statistics read off the graph: BN, then what keeps them known, and why not otherwise."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_gkp.analyse.bn_stats import ChannelStats, StatsReader
from onnx_gkp.analyse.expectation import activation, moments
from onnx_gkp.analyse.graph import constant_tensors

GRAPH = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,5,5] x) => (float[1,8,5,5] cat, float[1,4,5,5] silu, float[1,4,5,5] pooled, float[1,4,5,5] folded) {
  b1 = BatchNormalization (x, s1, t1, m, v)
  b2 = BatchNormalization (x, s2, t2, m, v)
  c = Clip (b1, lo, hi)
  sum = Add (c, b2)
  cat = Concat <axis=1> (sum, b2)
  sig = Sigmoid (b2)
  silu = Mul (b2, sig)
  mp = MaxPool <kernel_shape=[1,1]> (b1)
  pooled = Relu (mp)
  conv = Conv (x, w)
  folded = Relu (conv)
}
"""


def _reader() -> tuple[StatsReader, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    p = {
        "s1": rng.uniform(0.5, 2, 4),
        "t1": rng.normal(size=4),
        "s2": rng.uniform(0.5, 2, 4),
        "t2": rng.normal(size=4),
        "m": np.zeros(4),
        "v": np.ones(4),
        "lo": np.array(0.0),
        "hi": np.array(6.0),
        "w": rng.normal(size=(4, 4, 1, 1)),
    }
    model = onnx.parser.parse_model(GRAPH)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in p.items())
    return StatsReader(model, constant_tensors(model)[0]), {
        k: np.asarray(v, np.float32).astype(np.float64) for k, v in p.items()
    }


def test_statistics_follow_activations_adds_concats_and_gates() -> None:
    read, p = _reader()
    clip_mean, clip_var = moments(activation("Clip", low=0.0, high=6.0), p["t1"], p["s1"] ** 2)
    cat = read("cat")
    assert isinstance(cat, ChannelStats)
    np.testing.assert_allclose(cat.mean, np.concatenate([clip_mean + p["t2"], p["t2"]]))
    np.testing.assert_allclose(cat.var, np.concatenate([clip_var + p["s2"] ** 2, p["s2"] ** 2]))
    assert cat.path == "Concat(Add(BatchNormalization > Clip, BatchNormalization), BatchNormalization)"
    silu = read("silu")
    np.testing.assert_allclose(silu.mean, moments(activation("SiLU"), p["t2"], p["s2"] ** 2)[0])
    assert silu.path == "BatchNormalization > SiLU"


def test_no_statistics_say_where_the_walk_stopped() -> None:
    read, _ = _reader()
    assert read("pooled") == "input mean unknown: produced by MaxPool"
    assert read("folded") == "input mean unknown: produced by Conv"
    assert read("x") == "input mean unknown: it is a graph input"
