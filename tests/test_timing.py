"""Side-by-side timing gives no session a fixed place: neither in the round (a model timed first
ran 1-2% slower than the same model timed later) nor in the order the sessions are made (a
session made first ran 1-4% slower than copies made after it), biases that favoured every
pruned model over the original it was compared with."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import CHAIN, CHAIN_WEIGHTS, make_model

import onnx_gkp.runtime.timing as timing
from onnx_gkp.runtime.sessions import session
from onnx_gkp.runtime.timing import interleaved_medians, median_latency_ms

MODEL = make_model(CHAIN, CHAIN_WEIGHTS)


class _Recorded:
    """A real onnxruntime session that notes when it ran."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls, self.inner = name, calls, session(MODEL, optimise=True, threads=1)

    def run(self, outputs, feeds):  # type: ignore[no-untyped-def]
        self.calls.append(self.name)
        return self.inner.run(outputs, feeds)


def test_every_session_runs_first_equally_often() -> None:
    calls: list[str] = []
    names = ["a", "b", "c"]
    sessions = {n: _Recorded(n, calls) for n in names}
    feeds = {
        MODEL.graph.input[0].name: np.zeros(
            [d.dim_value for d in MODEL.graph.input[0].type.tensor_type.shape.dim], np.float32
        )
    }
    medians = interleaved_medians(sessions, feeds, 6)  # type: ignore[arg-type]
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 6 and all(sorted(r) == names for r in rounds)
    assert [r[0] for r in rounds] == ["a", "b", "c", "a", "b", "c"]
    assert set(medians) == set(names) and all(m > 0 for m in medians.values())


def test_no_sessions_times_nothing() -> None:
    assert interleaved_medians({}, {}, 5) == {}


def test_each_model_runs_in_sessions_made_early_and_late_after_a_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    models = {"a": MODEL, "b": make_model(CHAIN, CHAIN_WEIGHTS)}
    made: list[str] = []

    def recorded(model: onnx.ModelProto, **options: object) -> object:
        made.append(next(name for name, m in models.items() if m is model))
        return session(model, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(timing, "session", recorded)
    feeds = {
        MODEL.graph.input[0].name: np.zeros(
            [d.dim_value for d in MODEL.graph.input[0].type.tensor_type.shape.dim], np.float32
        )
    }
    times = median_latency_ms(models, feeds, 4)
    assert made == ["a", "a", "b", "b", "a"] and set(times) == {"a", "b"} and all(t > 0 for t in times.values())
