"""What each way of rewriting a Conv costs on this machine's onnxruntime, measured and cached.

A grouped Conv's speed on onnxruntime CPU depends on more than its MACs: the blocked-layout
fast path takes it only when the channels per group line up with the vector blocks, and the
fallback is slow for small groups (``docs/method.md``). So instead of modelling the runtime we
ask it: for each distinct layer geometry, one tiny model per variant ``(G, m)`` (the input
Gather, the grouped Conv and, for ``1 < G < C_out``, the output Gather, between two dense
neighbours), timed side by side with the dense Conv in the same setting, median of
interleaved runs. Only differences between variants of one layer are used.

In INT8 (``--quantize``) each variant model is quantized as the shipped model will be (QDQ
around every Conv and Gather), so the table sees what onnxruntime's int8 kernels and layout
changes cost: int8 Convs are fast only at some channel counts, and a channel Gather between
int8 Convs costs two Transposes (``docs/results.md``).

Figures are cached in a JSON file keyed by onnxruntime version, CPU, thread count, precision and
geometry, so a second run measures nothing and plans the same model byte-identically. The
table is plain data the planner queries (``{G: seconds}`` per layer); it knows nothing of
pruning.
"""

from __future__ import annotations

import json
import os
import platform
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from ..analyse.geometry import ConvGeometry, Variant
from ..io.paths import check_cache_path
from ..runtime.quantize import quantized
from ..runtime.timing import balanced_medians

try:
    import fcntl
except ImportError:  # not POSIX: concurrent runs may then lose each other's entries
    fcntl = None  # type: ignore[assignment]


def as_written(groups: int, keep: int, trimmed: bool) -> Variant:
    """The variant the rewrite writes: ``G = 1`` reading a source it trims needs no input gather."""
    return groups, keep, not (trimmed and groups == 1)


def credited(
    seconds: float, source_seconds: float, keep: int, c_in: int, trimmed_share: Optional[float] = None
) -> float:
    """A ``G = 1`` layer's time less what its trimmed source no longer spends on the ``c_in - keep``
    channels left out: the source's time in proportion to them, unless the source was measured
    computing only ``keep`` filters (``trimmed_share``: that time over its whole time) and saved
    less than half of that; then what was measured, a charge where it ran slower. Int8 kernels
    off their block size run slower with fewer filters: on the bundled model a 16-filter 3x3
    Conv took 1.41x its whole time at 8 filters, and crediting it half its time pruned a stage
    that made the model slower (``docs/results.md``)."""
    saved = 1 - keep / c_in
    if trimmed_share is not None and 1 - trimmed_share < saved / 2:
        saved = 1 - trimmed_share
    return max(seconds - source_seconds * saved, 0.0)


def _indices(geometry: ConvGeometry, groups: int, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Representative gather indices: each group keeps ``keep`` channels, spread over C_in."""
    c_out, c_in = geometry.weight_shape[:2]
    rng = np.random.default_rng(groups * 7919 + keep)
    in_index = np.concatenate([np.sort(rng.permutation(c_in)[:keep]) for _ in range(groups)])
    return in_index.astype(np.int64), rng.permutation(c_out).astype(np.int64)


def variant_model(geometry: ConvGeometry, groups: int, keep: int, gathered: bool = True) -> onnx.ModelProto:
    """The layer as the pass writes it, between two dense 1x1 Convs standing for its neighbours.

    ``Gather -> Conv(group=G) [-> Gather]``; without ``gathered``, the Conv reads the ``m``
    channels straight from its neighbour (the gather folded back into it, ``conv._trim``),
    as the dense Conv does with all ``C_in``. The neighbours matter: onnxruntime runs chains of
    aligned Convs in a blocked layout, and a Gather or a misaligned grouped Conv in the chain
    costs layout conversions on both sides, which a Conv timed alone would not show.
    """
    c_out, c_in, *kernel = geometry.weight_shape
    dtype = np.dtype(geometry.dtype)
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    ones = [1] * len(kernel)

    def init(name: str, values: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(values, name))
        return name

    inits: list[onnx.TensorProto] = []
    in_index, out_index = _indices(geometry, groups, keep)
    made = c_in if gathered else keep  # channels the neighbour computes
    # Values do not change the run time; constants are quick to build for large layers.
    nodes = [
        helper.make_node("Conv", ["x", init("w_pre", np.full((made, c_in, *ones), 1.0 / c_in, dtype))], ["pre"]),
        helper.make_node("Relu", ["pre"], ["a"]),
    ]
    conv_inputs = ["ag" if gathered else "a", init("w", np.full((c_out, keep, *kernel), 0.01, dtype))]
    if geometry.bias:
        conv_inputs.append(init("b", np.full(c_out, 0.01, dtype)))
    if gathered:
        nodes.append(helper.make_node("Gather", ["a", init("in_index", in_index)], ["ag"], axis=1))
    regather = 1 < groups < c_out
    nodes.append(
        helper.make_node("Conv", conv_inputs, ["yg" if regather else "y"], group=groups, **dict(geometry.attributes))
    )
    if regather:
        nodes.append(helper.make_node("Gather", ["yg", init("out_index", out_index)], ["y"], axis=1))
    nodes.append(
        helper.make_node("Conv", ["y", init("w_post", np.full((c_out, c_out, *ones), 1.0 / c_out, dtype))], ["z"])
    )
    graph = helper.make_graph(
        nodes,
        "gkp_cost",
        [helper.make_tensor_value_info("x", elem, list(geometry.input_shape))],
        [helper.make_tensor_value_info("z", elem, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def measure(
    geometry: ConvGeometry,
    variants: Sequence[Variant],
    threads: int = 1,
    budget_s: float = 0.1,
    precision: str = "fp32",
) -> dict[Variant, float]:
    """Median seconds of each variant (interleaved runs, as many as fit in about ``budget_s``),
    quantized with ``precision``'s types unless it is ``fp32``."""
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal(geometry.input_shape).astype(geometry.dtype)}
    models = {v: variant_model(geometry, *v) for v in variants}
    if precision != "fp32":
        ranges = {"x": rng.standard_normal((2, *geometry.input_shape[1:])).astype(geometry.dtype)}
        models = {v: quantized(m, ranges, precision, prepare=False) for v, m in models.items()}
    return balanced_medians(models, feeds, threads, lambda warm: int(np.clip(budget_s / max(warm, 1e-6), 5, 101)))


def cpu_name() -> str:
    """The CPU model, part of every cache key (timings do not carry across machines)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_cache_path() -> Path:
    """``$ONNX_GKP_CACHE`` if set and not empty, else ``~/.cache/onnx_gkp/conv_costs.json``."""
    if os.environ.get("ONNX_GKP_CACHE"):
        return Path(os.environ["ONNX_GKP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "onnx_gkp" / "conv_costs.json"


def read_cache(path: Path) -> dict[str, float]:
    """The entries of a cost cache worth keeping; a damaged cache is only lost time.

    Unreadable files, JSON that is not an object (``null``, a list) or nests too deep, are read
    as empty; entries whose value is not a number, or a layer time that is not a finite
    positive number of seconds (``0`` would divide), are dropped and measured again.
    """
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(found, dict):
        return {}
    entries = {}
    for key, value in found.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            continue
        if " | G=" in key and not 0 < value < float("inf"):
            continue
        entries[key] = float(value)
    return entries


class CostTable:
    """Seconds per (layer geometry, variant), measured on first use and kept in a JSON cache."""

    def __init__(self, threads: int = 1, path: Optional[Path] = None) -> None:
        self.threads = threads
        self.path = path
        # "balanced": each model timed in sessions made both ways (runtime/timing.py)
        self.prefix = f"onnxruntime {ort.__version__} | {cpu_name()} | {threads} thread(s) | balanced | "
        self.precision = "fp32"  # or the INT8 types (quantize.TYPES) the layers are timed in
        self.entries: dict[str, float] = {}
        self.measured = 0
        if path is not None:
            check_cache_path(path)
        if path is not None and path.is_file():
            self.entries = read_cache(path)

    def _key(self, geometry: ConvGeometry, variant: Variant) -> str:
        precision = "" if self.precision == "fp32" else f"{self.precision} | "
        gathered = "" if variant[2] else " ungathered"
        return f"{self.prefix}{precision}{geometry.key} | G={variant[0]} m={variant[1]}{gathered}"

    def record(self, geometry: ConvGeometry, variant: Variant, seconds: float) -> None:
        """Set one figure by hand (a table carried from another run, or a test)."""
        self.entries[self._key(geometry, variant)] = seconds
        self.measured += 1

    def remember(self, decision: str, value: float) -> None:
        """Keep a measured model-level decision (the end-to-end guard level) with the layer times."""
        self.entries[self.prefix + decision] = value
        self.measured += 1

    def recall(self, decision: str) -> Optional[float]:
        return self.entries.get(self.prefix + decision)

    def times(self, geometry: ConvGeometry, variants: Sequence[Variant]) -> dict[Variant, float]:
        """Seconds of the dense Conv and each variant, measuring the ones not yet known. Variants
        measured after the dense Conv's figure was kept are scaled by its time in their own run:
        only ratios to the dense Conv carry from one run to another (a later run, under another
        load, once read every variant of a layer 1.4x slow, half its channels slower than all)."""
        wanted = [geometry.dense] + [v for v in variants if v != geometry.dense]
        missing = [v for v in wanted if self._key(geometry, v) not in self.entries]
        if missing:
            fresh = measure(
                geometry,
                wanted if geometry.dense in missing else [geometry.dense] + missing,
                self.threads,
                precision=self.precision,
            )
            dense = self.entries.get(self._key(geometry, geometry.dense), fresh[geometry.dense])
            for v in missing:
                self.entries[self._key(geometry, v)] = fresh[v] * dense / fresh[geometry.dense]
            self.measured += len(missing)
        return {v: self.entries[self._key(geometry, v)] for v in wanted}

    def trimmed_share(self, geometry: Optional[ConvGeometry], keep: int) -> Optional[float]:
        """The time of ``geometry``'s Conv computing only ``keep`` of its filters, over its whole
        time (what a ``G = 1`` reader that trims it leaves it); None where it is not timed."""
        if geometry is None or not 0 < keep < geometry.weight_shape[0]:
            return None
        fewer = replace(geometry, weight_shape=(keep, *geometry.weight_shape[1:]))
        return self.times(fewer, [])[fewer.dense] / self.times(geometry, [])[geometry.dense]

    def credited_time(
        self, seconds: float, source_seconds: float, source: Optional[ConvGeometry], keep: int, c_in: int
    ) -> float:
        """:func:`credited` with the source's trimmed share measured where the source is timed
        (``source_seconds`` 0: an untimed source, credited nothing)."""
        return credited(
            seconds, source_seconds, keep, c_in, self.trimmed_share(source, keep) if source_seconds else None
        )

    def save(self) -> None:
        """Merge this run's figures into the cache file, atomically and under an exclusive lock
        (``fcntl.flock`` on the sidecar ``.NAME.lock``, left in place), so runs sharing one cache
        keep every run's entries. A figure already in the file stays as it is (it may have
        planned another run's output); failure to write is not an error of the run."""
        if self.path is None or not self.measured:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
                if fcntl is not None:
                    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                if self.path.exists() and not self.path.is_file():
                    return  # a FIFO, a device or a folder put there since: never replaced
                merged = {**self.entries, **(read_cache(self.path) if self.path.exists() else {})}
                tmp.write_text(json.dumps(dict(sorted(merged.items())), indent=0) + "\n")
                os.replace(tmp, self.path)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
