"""Is the calibration data what the model expects? Checked once it is loaded, before any pruning work.

Wrong data passes every later figure: the held-out samples come from the same data, so a model
pruned on noise agrees with itself on noise. Three kinds of evidence, each a plain record
(:class:`CalibrationCheck`) of a check that failed, never printed here:

* the model's expectation: where a BatchNormalization reads an input, or the output of the first
  Conv after it, its running mean and variance are the moments of that tensor over the training
  data; the data's own moments there (the original run up to that tensor only) should be near them;
* the data itself: constant or identical samples, and 0..255 values where that
  BatchNormalization says the model was trained on normalised ones;
* the original's outputs on the held-out samples: NaN, all zeros, the same output for every
  sample, one class for nearly every sample, or class scores near uniform.

The limits sit between what real inputs of the zoo models and the bundled one give (median
mean z-scores at most 0.94, median variance ratios 0.059 to 1.4, a top class on at most 58% of
the samples) and what wrong data gives (0..255 data: z-scores from 20, ratios from 500).
Data not normalised, in [0, 1] (ratios 0.008 to 0.16), overlaps real inputs of little contrast
(printed pages: 0.06 to 0.16); it is told apart only where the ratio is off by more than 4x
alike on every channel (the std of its log at most 0.1): a wrong scale of a one-channel input
does that (0.03 on the bundled model), real inputs off by as much do not (0.9 and 2.0).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Collection, Optional, Sequence

import numpy as np
import onnx

from ..analyse.graph import constant_lookup
from ..errors import ValidationFailed
from ..io.model_file import graph_inputs
from ..runtime.sessions import batch_size, run, session, up_to
from .metrics import kind_of, probabilities

MEAN_Z = 3.0  # median over channels of |mean - running mean| / running standard deviation
VARIANCE_RATIO = (1 / 50, 10.0)  # median over channels of variance / running variance
RESCALED = (4.0, 0.1, 8)  # a variance ratio off by 4x alike (its log's std at most 0.1) on 8 channels or more
ONE_CLASS = 0.95  # share of the held-out samples whose top class is the same one
UNIFORM = 0.05  # a mean top probability within this share of (1 - 1/C) above 1/C
CLASS_SAMPLES = 20  # fewer held-out samples say nothing about the classes
BN_SAMPLES = 128  # evenly spaced samples whose moments are compared (a file sorted by class too)
FIRST_NODES = 8  # nodes from an input to its first BatchNormalization, at most
LINEAR = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # at most one of these before it


@dataclass(frozen=True)
class CalibrationCheck:
    """A check the data failed: ``check`` what was checked, ``where`` (an input, a
    BatchNormalization, an output), ``measured`` by how much, ``cause`` the likely reason."""

    check: str
    where: str
    measured: str
    cause: str

    @property
    def message(self) -> str:
        return f"{self.where}: {self.measured} (likely {self.cause})"


@dataclass(frozen=True)
class Moments:
    """Per channel at the input of BatchNormalization ``node`` (node ``index``, reached from
    graph input ``input``): its running mean and variance, and the data's."""

    index: int
    node: str
    input: str
    running_mean: np.ndarray
    running_var: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float

    @property
    def z(self) -> np.ndarray:
        return np.abs(self.mean - self.running_mean) / np.sqrt(self.running_var + self.eps)

    @property
    def ratio(self) -> np.ndarray:
        return (self.var + self.eps) / (self.running_var + self.eps)

    @property
    def rescaled(self) -> bool:
        """The training data at another scale: a wrong input scale multiplies every channel's
        variance alike, where real inputs of other content change the channels unevenly."""
        factor, spread, channels = RESCALED
        ratio = float(np.median(self.ratio))
        alike = self.ratio.size >= channels and float(np.std(np.log(self.ratio))) <= spread
        return alike and not 1 / factor <= ratio <= factor

    @property
    def fits(self) -> bool:
        """Most channels (the median) near the running statistics: a few odd channels are real."""
        low, high = VARIANCE_RATIO
        ratio = float(np.median(self.ratio))
        return float(np.median(self.z)) <= MEAN_Z and low <= ratio <= high and not self.rescaled


def calibration_checks(
    model: onnx.ModelProto, data: dict[str, np.ndarray], outputs: Optional[Sequence[np.ndarray]]
) -> list[CalibrationCheck]:
    """Every check of ``data`` (arrays named like the model's inputs) and of the original's
    ``outputs`` on the held-out samples, in that order; empty when the data passed them all."""
    with np.errstate(over="ignore", invalid="ignore"):  # samples near the float limits: moments of inf
        found = data_checks(data)
        found += expectation_checks(model, data, skip={c.where for c in found})
        if outputs is not None:
            found += output_checks([o.name for o in model.graph.output], outputs)
    return found


def strict_refusal(checks: Sequence[CalibrationCheck]) -> str:
    """The one line ``strict`` refuses the data with."""
    return f"the calibration data fails {len(checks)} check(s), refused under --strict: " + "; ".join(
        c.message for c in checks
    )


def data_checks(data: dict[str, np.ndarray]) -> list[CalibrationCheck]:
    """Float inputs whose every value is one number, or whose samples are all the same."""
    found = []
    for name, x in data.items():
        if not np.issubdtype(x.dtype, np.floating) or not x.size:
            continue
        if x.min() == x.max():
            measured = f"every value of the {len(x)} samples is {float(x.flat[0]):g}"
            found.append(CalibrationCheck("constant", f"input {name!r}", measured, "placeholder data such as zeros"))
        elif len(x) > 1 and _identical(x):
            measured = f"all {len(x)} samples are the same"
            found.append(CalibrationCheck("identical", f"input {name!r}", measured, "one input repeated"))
    return found


def _identical(x: np.ndarray, block: int = 64) -> bool:
    """Whether every sample equals the first, a block at a time (real data stops at the first)."""
    return not any((x[start : start + block] != x[0]).any() for start in range(1, len(x), block))


def expectation_checks(
    model: onnx.ModelProto, data: dict[str, np.ndarray], skip: Collection[str] = ()
) -> list[CalibrationCheck]:
    """The data's moments at each first BatchNormalization against its running statistics,
    with the channel order or 0..255 values named where they explain a miss; inputs whose
    record is in ``skip`` (constant data, say) are left out."""
    firsts = [(i, name) for i, name in first_batchnorms(model) if name in data and f"input {name!r}" not in skip]
    found = []
    for m in moments(model, data, firsts):
        if m.fits:
            continue
        x = data[m.input]
        swapped = _swapped(x)
        again = [] if swapped is None else moments(model, {**data, m.input: swapped}, [(m.index, m.input)])
        reordered = bool(again) and again[0].fits
        pixels = _pixels(x)
        found.append(_expectation_record(m, reordered, pixels is not None))
        if not reordered and pixels is not None and np.median(m.ratio) > VARIANCE_RATIO[1]:
            found.append(
                CalibrationCheck(
                    "value range",
                    f"input {m.input!r}",
                    f"{pixels} in 0..255 (largest {float(x.max()):g}) for a float input that BatchNormalization "
                    f"{m.node!r} says was normalised in training",
                    "raw pixels: scale and normalise them as in training, by (x / 255 - mean) / std",
                )
            )
    return found


def _expectation_record(m: Moments, reordered: bool, pixels: bool) -> CalibrationCheck:
    z, ratio = float(np.median(m.z)), float(np.median(m.ratio))
    low, high = VARIANCE_RATIO
    scaled = not low <= ratio <= high or m.rescaled
    worst = int(np.argmax(np.abs(np.log(m.ratio)) if scaled else m.z))
    measured = (
        f"variance {ratio:.3g}x the running variance, mean {z:.3g} running standard deviations off "
        f"(median over {m.mean.size} channels, worst channel {worst}: {m.ratio[worst]:.3g}x, {m.z[worst]:.3g}"
        + (f", std of the log ratio {np.std(np.log(m.ratio)):.2g})" if m.rescaled else ")")
    )
    if reordered:
        cause = "channels in the wrong order, RGB for BGR or the reverse: reversed, the data fits"
    elif ratio > high:
        cause = (
            "the wrong scale: unnormalised 0..255 values, not scaled and normalised as in training"
            if pixels
            else "the wrong scale: not normalised by (x - mean) / std as in training, or scaled up"
        )
    elif m.rescaled:
        cause = (
            f"the wrong scale: {ratio ** (-0.5 if ratio < 1 else 0.5):.3g}x {'narrower' if ratio < 1 else 'wider'} "
            "than in training on every channel alike, as data not normalised by (x - mean) / std gives"
        )
    elif scaled:
        cause = "the wrong scale: smaller values than in training, normalised twice say, or blank inputs"
    else:
        cause = "an offset: the wrong mean subtracted, or none, or inputs of another kind than in training"
    return CalibrationCheck(
        "batchnorm statistics", f"input {m.input!r} at BatchNormalization {m.node!r}", measured, cause
    )


def _pixels(x: np.ndarray, head: int = 64) -> Optional[str]:
    """``integer values`` or ``values`` where ``x`` lies in 0..255 beyond [0, 1], else None."""
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 255 or high <= 1:
        return None
    sample = x[:head]
    return "integer values" if np.array_equal(sample, np.round(sample)) else "values"


def _swapped(x: np.ndarray) -> Optional[np.ndarray]:
    """Three channels (NCHW, else NHWC) in the reverse order, or None."""
    if x.ndim == 4 and x.shape[1] == 3:
        return x[:, ::-1]
    if x.ndim == 4 and x.shape[-1] == 3:
        return x[..., ::-1]
    return None


def first_batchnorms(model: onnx.ModelProto) -> list[tuple[int, str]]:
    """``(node index, graph input)`` of each BatchNormalization that reads a graph input, or
    the output of the first Conv (or other linear node) after one, within ``FIRST_NODES``
    nodes: those whose statistics are cheapest to compare."""
    nodes = model.graph.node
    readers: dict[str, list[int]] = defaultdict(list)
    for index, node in enumerate(nodes):
        for name in dict.fromkeys(node.input):
            readers[name].append(index)
    found: dict[int, str] = {}
    for value in graph_inputs(model):
        queue, seen = [(value.name, 0, 0)], set()
        while queue:
            tensor, linear, depth = queue.pop(0)  # nearest first
            for index in readers.get(tensor, ()):
                node = nodes[index]
                if index in seen or node.domain not in ("", "ai.onnx"):
                    continue
                seen.add(index)
                if node.op_type == "BatchNormalization":
                    if node.input[0] == tensor:
                        found.setdefault(index, value.name)
                    continue
                crossed = linear + (node.op_type in LINEAR)
                if crossed <= 1 and depth + 1 < FIRST_NODES:
                    queue.extend((out, crossed, depth + 1) for out in node.output if out)
    return sorted(found.items())


def _running(
    model: onnx.ModelProto, firsts: Sequence[tuple[int, str]]
) -> list[tuple[int, str, np.ndarray, np.ndarray, float]]:
    """Each of ``firsts`` with its constant running mean, variance and epsilon (inference-mode
    BatchNormalizations with constant statistics only)."""
    constant = constant_lookup(model)
    kept = []
    for index, name in firsts:
        node = model.graph.node[index]
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        stats = [constant(n) for n in node.input[3:5]] if len(node.input) >= 5 else [None]
        if (
            any(s is None for s in stats)
            or attributes.get("training_mode", 0)
            or len([o for o in node.output if o]) > 1
        ):
            continue
        mean, var = (s.astype(np.float64).reshape(-1) for s in stats)  # type: ignore[union-attr]
        kept.append((index, name, mean, var, float(attributes.get("epsilon", 1e-5))))
    return kept


def moments(
    model: onnx.ModelProto, data: dict[str, np.ndarray], firsts: Sequence[tuple[int, str]], samples: int = BN_SAMPLES
) -> list[Moments]:
    """The data's per-channel moments at the input of each BatchNormalization of ``firsts``
    (node index, graph input) beside its running ones, over ``samples`` evenly spaced samples;
    the model runs up to those tensors only. Empty where onnxruntime cannot run that part."""
    running = _running(model, firsts)
    tensors = list(dict.fromkeys(model.graph.node[i].input[0] for i, *_ in running))
    if not tensors:
        return []
    inner = [t for t in tensors if t not in data]  # a BatchNormalization may read a graph input
    count, unbounded = len(next(iter(data.values()))), 1 << 40
    fixed = batch_size(model, unbounded)  # a model of a fixed batch size runs whole batches only
    chunk, taken = (32, min(count, samples)) if fixed == unbounded else (fixed, min(count, max(samples, fixed)))
    taken -= taken % chunk if fixed != unbounded else 0
    if not taken:
        return []
    index = np.unique(np.linspace(0, count - 1, taken).round().astype(np.int64))
    shift = {model.graph.node[i].input[0]: mean for i, _, mean, _, _ in reversed(running)}
    sums = {t: [0.0, 0.0, 0] for t in tensors}  # sum of (y - shift), of its square, elements per channel
    try:
        sess = session(up_to(model, inner), optimise=True, threads=os.cpu_count() or 1) if inner else None
        for start in range(0, len(index), chunk):  # a batch copied at a time
            batch = {name: array[index[start : start + chunk]] for name, array in data.items()}
            values = {**batch, **(dict(zip(inner, run(sess, batch))) if sess is not None else {})}
            for tensor in tensors:
                _accumulate(sums[tensor], values[tensor], shift[tensor])
    except (ValidationFailed, ValueError):  # a check that cannot run says nothing
        return []
    found = []
    for i, name, mean, var, eps in running:
        tensor = model.graph.node[i].input[0]
        total, squares, elements = sums[tensor]
        if not elements or np.shape(total) != mean.shape:
            continue
        offset = np.asarray(total) / elements
        data_mean = shift[tensor] + offset
        data_var = np.maximum(np.asarray(squares) / elements - offset**2, 0.0)
        node = model.graph.node[i]
        found.append(Moments(i, node.name or node.output[0], name, mean, var, data_mean, data_var, eps))
    return found


def _accumulate(sums: list, y: np.ndarray, shift: np.ndarray) -> None:
    """Add one batch's per-channel sums (of ``y - shift`` and its square) to ``sums``."""
    if y.ndim < 2 or y.shape[1] != shift.size:
        raise ValueError("not a per-channel tensor of the statistics' channels")
    d = y.reshape(y.shape[0], y.shape[1], -1)
    if d.dtype != np.float32 or not d.flags.writeable:
        d = d.astype(np.float32)
    d -= shift.astype(np.float32)[:, None]  # in place: the batch's own copy
    sums[0] = sums[0] + d.sum(axis=2).sum(axis=0, dtype=np.float64)  # per sample in float32, then in float64
    sums[1] = sums[1] + np.einsum("bcs,bcs->bc", d, d).sum(axis=0, dtype=np.float64)
    sums[2] += d.shape[0] * d.shape[2]


def output_checks(names: Sequence[str], outputs: Sequence[np.ndarray]) -> list[CalibrationCheck]:
    """The original's float outputs on the held-out samples: NaN, all zeros, the same for every
    sample; and for class scores one class on nearly every sample, or near-uniform scores."""
    found = []
    for name, y in zip(names, outputs):
        if not np.issubdtype(y.dtype, np.floating) or not y.size:
            continue
        where, n = f"output {name!r}", len(y)
        broken = int((~np.isfinite(y)).reshape(n, -1).any(axis=1).sum())
        if broken:
            measured = f"NaN or infinite on {broken} of {n} held-out samples"
            cause = "inputs far outside the range the model was trained on, which overflow it"
        elif not y.any():
            measured = f"all zeros on the {n} held-out samples"
            cause = "inputs the model does not respond to: blank, constant or wrongly scaled data"
        elif n > 1 and float(np.ptp(y, axis=0).max()) <= 1e-6 * float(np.abs(y).max()):
            measured = f"the same on every one of the {n} held-out samples"
            cause = "constant or identical inputs, or inputs so far off that the model saturates"
        else:
            found += _class_checks(where, y) if kind_of(y) == "classes" and n >= CLASS_SAMPLES else []
            continue
        found.append(CalibrationCheck("output values", where, measured, cause))
    return found


def _class_checks(where: str, scores: np.ndarray) -> list[CalibrationCheck]:
    p = probabilities(scores.astype(np.float64))
    n, classes = p.shape
    counts = np.bincount(p.argmax(axis=1), minlength=classes)
    found = []
    if counts.max() >= ONE_CLASS * n:
        found.append(
            CalibrationCheck(
                "one class",
                where,
                f"class {int(counts.argmax())} comes first on {int(counts.max())} of {n} held-out samples",
                "inputs unlike the training data (noise, blank or wrongly scaled ones), or data of one class only",
            )
        )
    top = float(p.max(axis=1).mean())
    if top <= 1 / classes + UNIFORM * (1 - 1 / classes):
        found.append(
            CalibrationCheck(
                "uniform scores",
                where,
                f"mean top probability {top:.3g} over {classes} classes (uniform: {1 / classes:.3g})",
                "inputs unlike the training data: the model is unsure of every one",
            )
        )
    return found
