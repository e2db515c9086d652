"""``python -m onnx_gkp IN.onnx OUT.onnx``: prune, validate, write, print the table.

Exit codes: 0 written; 1 validation failed or could not run (nothing written);
2 bad input or usage (one line on stderr, nothing written); 3 internal error (a bug);
130 interrupted (Ctrl-C or SIGTERM; nothing written, no temporary file left).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

import onnxruntime as ort

from .api import prune
from .check.metrics import TARGET_METRICS
from .cost.table import default_cache_path
from .errors import GkpError
from .io.model_file import first_line, save_model, write_atomic
from .io.paths import check_run_paths
from .io.samples import Preprocess
from .layer.kernels import CRITERIA
from .limits import DEFAULT_KEEP
from .options import Options
from .plan.model import Plan
from .report.plot import PLOT_SUFFIXES, write_plot
from .ship.int8 import CHOICES as QUANTIZE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every other refusal
        raise GkpError(message)


def _groups(text: str) -> object:
    if text == "auto":
        return "auto"
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"--groups must be 'auto' or a positive integer, not {text!r}")


def _integer(text: str) -> int:
    """An integer in ASCII digits: Python's int() also takes '٤' (Arabic-Indic four) for 4."""
    if not (text.isascii() and text.lstrip("+-").isdigit()):
        raise ValueError(text)
    return int(text)


def _number(text: str) -> float:
    """A number in ASCII (float() also takes non-ASCII digits); nan and inf pass, the options refuse them."""
    if not text.isascii():
        raise ValueError(text)
    return float(text)


_integer.__name__, _number.__name__ = "int", "float"  # argparse names the type in its message


def _test_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.rpartition(":")
    try:
        shape = tuple(_integer(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not name or not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--test-shape wants NAME:d0,d1,... with positive dims, not {text!r}")
    return name, shape


def _pair(flag: str, convert: type) -> object:
    """A ``NAME:VALUE`` (``--fidelity``) or ``NAME=VALUE`` (``--input-value``) argument parser."""
    separator = ":" if flag == "--fidelity" else "="

    def parse(text: str) -> tuple[str, object]:
        name, _, value = text.rpartition(separator)
        try:
            return name, convert(value)
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"{flag} wants NAME{separator}VALUE, not {text!r}")

    return parse


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated numbers, not {text!r}") from None


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) == 2 and all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(f"--image-size wants HxW, not {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="onnx-gkp", description="Grouped Kernel Pruning with a flexible group count for ONNX CNNs.")
    p.add_argument("input", type=Path, help="model to prune (never modified)")
    p.add_argument("output", type=Path, help="where the pruned model is written")
    p.add_argument("--ratio", type=_number, help="the uniform mode: fraction of grouped kernels pruned in every layer")
    p.add_argument(
        "--keep",
        type=_number,
        metavar="F",
        help="least fidelity to keep on held-out real inputs (top-1 agreement for class scores, cosine for dense "
        f"outputs; needs --calibration; default {DEFAULT_KEEP} with it)",
    )
    p.add_argument(
        "--fidelity",
        type=_pair("--fidelity", str),
        action="append",
        default=[],
        metavar="OUTPUT:METRIC",
        help=f"the metric --keep reads for an output: {', '.join(TARGET_METRICS)} (default: top1 for [N, C] class "
        "scores, cosine otherwise)",
    )
    p.add_argument(
        "--target-macs",
        type=_number,
        metavar="F",
        help="remove the fraction F of the model's Conv MACs, choosing every layer's kept count and G jointly where "
        "they cost least quality",
    )
    p.add_argument(
        "--target-latency",
        type=_number,
        metavar="F",
        help="make the pruned model take at most F of the original's onnxruntime time on this machine (layer times "
        "measured; checked end to end)",
    )
    p.add_argument(
        "--groups",
        type=_groups,
        default=Options.groups,
        help="'auto' (flexible, per layer) or one count N for every layer it divides",
    )
    p.add_argument(
        "--criterion",
        choices=CRITERIA,
        default=Options.criterion,
        help="grouped-kernel score (default combined = energy x geometric-median distance)",
    )
    p.add_argument(
        "--max-groups",
        type=_integer,
        default=Options.max_groups,
        help=f"largest group count 'auto' considers (default {Options.max_groups})",
    )
    p.add_argument(
        "--align",
        type=_integer,
        default=Options.align,
        metavar="N",
        help="in layers of at least 4N input channels, keep a multiple of N channels per group, the block "
        f"onnxruntime's fast Conv kernels work on (default {Options.align}; 1 = the exact count)",
    )
    p.add_argument(
        "--group-cost",
        type=_number,
        default=Options.group_cost,
        help=f"relative error one doubling of G must save to be taken (default {Options.group_cost}; 0 = quality only)",
    )
    p.add_argument(
        "--no-compensation",
        action="store_true",
        help="do not add the pruned kernels' expected contribution to the bias where BN statistics give the input "
        "means",
    )
    p.add_argument(
        "--calibration",
        metavar="FILE|FOLDER",
        help="real inputs (.npz named like the model's inputs, .npy, or a folder of images): a quarter held out to "
        "measure fidelity, the rest refits each pruned layer (a few hundred samples)",
    )
    p.add_argument(
        "--image-size",
        type=_size,
        metavar="HxW",
        help="images from a --calibration folder are resized to this (default: the input's fixed size)",
    )
    p.add_argument(
        "--mean",
        type=_numbers,
        default=(0.0,),
        metavar="M[,M,M]",
        help="images: subtracted per channel after scaling pixels to [0, 1] (e.g. 0.485,0.456,0.406)",
    )
    p.add_argument(
        "--std",
        type=_numbers,
        default=(1.0,),
        metavar="S[,S,S]",
        help="images: divided per channel after the mean (e.g. 0.229,0.224,0.225)",
    )
    p.add_argument(
        "--channel-order",
        choices=("RGB", "BGR", "L"),
        default="RGB",
        help="images: channel order (L = grey, default RGB)",
    )
    p.add_argument(
        "--layout", choices=("NCHW", "NHWC"), default="NCHW", help="images: the input's layout (default NCHW)"
    )
    p.add_argument(
        "--input-value",
        type=_pair("--input-value", float),
        action="append",
        default=[],
        metavar="NAME=V",
        help="without --calibration: feed this value to an input in the exactness check (integer or scalar inputs, "
        "e.g. a sample rate; default: zeros for integers, noise for floats)",
    )
    p.add_argument(
        "--quantize",
        choices=QUANTIZE,
        help="after pruning, quantize with onnxruntime's static QDQ quantization on the --calibration samples: int8 = the most faithful on the held-out samples of the types that run fastest here (u8s8: uint8 activations, int8 weights; u8s7: the weights in 7 bits, which CPUs without VNNI need to avoid saturation; s8s8: both int8); fidelity and --keep are measured on the quantized model, and compared with the original quantized alone",  # noqa: E501
    )
    p.add_argument(
        "--quality-only",
        action="store_true",
        help="choose G for accuracy alone; by default each layer's candidates are timed on this machine's "
        "onnxruntime and no layer is made slower",
    )
    p.add_argument(
        "--speed-slack",
        type=_number,
        default=Options.speed_slack,
        help=f"how much slower than the fastest candidate a more accurate G may be (default {Options.speed_slack})",
    )
    p.add_argument(
        "--threads",
        type=_integer,
        default=Options.threads,
        help=f"onnxruntime threads for timing layers and the validation latency (default {Options.threads})",
    )
    p.add_argument(
        "--cost-cache",
        type=Path,
        metavar="FILE.json",
        help="measured layer times (default $ONNX_GKP_CACHE or ~/.cache/onnx_gkp/conv_costs.json)",
    )
    p.add_argument("--include", metavar="REGEX", help="prune only Convs whose node name matches")
    p.add_argument("--exclude", metavar="REGEX", help="leave alone Convs whose node name matches")
    p.add_argument(
        "--min-in-channels",
        type=_integer,
        default=Options.min_in_channels,
        help=f"leave alone Convs with fewer input channels (default {Options.min_in_channels})",
    )
    p.add_argument(
        "--seed",
        type=_integer,
        default=Options.seed,
        help=f"seed of clustering and validation inputs (default {Options.seed})",
    )
    p.add_argument(
        "--test-shape",
        type=_test_shape,
        action="append",
        default=[],
        metavar="NAME:d0,d1,...",
        help="concrete shape for an input with dynamic dims (repeatable)",
    )
    p.add_argument(
        "--apply",
        type=Path,
        metavar="PLAN.json",
        help="apply the plan of an earlier run's --report (or a bare plan) to IN instead of planning: the same bytes "
        "out, validated; the analysis options come from the plan",
    )
    p.add_argument("--report", type=Path, metavar="FILE.json", help="write the full report as JSON")
    p.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.html",
        help="draw each Conv's MACs before/after, G and kept fraction (.html or .svg)",
    )
    p.add_argument("--no-validate", action="store_true", help="skip the onnxruntime check against the masked reference")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument(
        "--save-external-data",
        action="store_true",
        help="write the weights to OUT.data next to OUT (automatic past protobuf's 2 GiB)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--verbose", action="store_true", help="also print the time each stage took")
    return p


def run(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _check_paths(args)
    if args.plot and args.plot.suffix.lower() not in PLOT_SUFFIXES:
        raise GkpError(f"--plot writes .html or .svg, not {args.plot.suffix or 'a file without suffix'}")
    model, report = prune(args.input, _options(args))
    if not args.quiet:
        print(report.table())
    print(report.summary())
    if args.verbose:
        print("stages: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in report.timings.items()))
    save_model(model, args.output, force=args.force, external_data=args.save_external_data or None)
    if args.report:
        write_atomic(args.report, report.to_json().encode())
    if args.plot:
        write_plot(report, args.plot)
    print(f"wrote {args.output}")
    return 0


def _options(args: argparse.Namespace) -> Options:
    """The run's options; with ``--apply``, the plan's, and its analysis options."""
    chosen = dict(
        metrics=dict(args.fidelity),
        input_values=dict(args.input_value),
        groups=args.groups,
        criterion=args.criterion,
        max_groups=args.max_groups,
        align=args.align,
        group_cost=args.group_cost,
        seed=args.seed,
        check=not args.no_validate,
        progress=not args.quiet,
        runtime_aware=not args.quality_only,
        compensate=not args.no_compensation,
        calibration=args.calibration,
        speed_slack=args.speed_slack,
        threads=args.threads,
        cost_cache=args.cost_cache,
        preprocess=Preprocess(
            size=args.image_size, mean=args.mean, std=args.std, order=args.channel_order, layout=args.layout
        ),
    )
    if args.apply is None:
        return Options(
            ratio=args.ratio,
            keep=args.keep,
            target_macs=args.target_macs,
            target_latency=args.target_latency,
            include=args.include,
            exclude=args.exclude,
            min_in_channels=args.min_in_channels,
            test_shapes=dict(args.test_shape),
            quantize=args.quantize,
            **chosen,
        )
    if args.test_shape or any(
        v is not None
        for v in (args.ratio, args.keep, args.target_macs, args.target_latency, args.include, args.exclude)
    ):
        raise GkpError(
            "--apply applies the plan as it is: give it without --ratio, --keep, --target-*, --include, "
            "--exclude or --test-shape"
        )
    try:
        text = args.apply.read_text()
        plan = Plan.from_dict(json.loads(text))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise GkpError(f"cannot read the plan {args.apply}: {first_line(error)}") from None
    return Options.applying(plan, quantize=args.quantize, **chosen)


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that are inputs or each other, exist without --force or
    cannot be written (``paths.py``)."""
    check_run_paths(
        args.input,
        args.output,
        force=args.force,
        external=args.save_external_data,
        report=args.report,
        plot=args.plot,
        cost_cache=args.cost_cache or default_cache_path(),
        inputs=(None if args.calibration is None else Path(args.calibration), args.apply),
    )


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so SIGTERM, too, removes the temporary files on its way out


def main(argv: Optional[Sequence[str]] = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    ort.set_default_logger_severity(4)  # onnxruntime's own error lines: the one line below says it
    try:
        return run(argv)
    except GkpError as error:
        print(f"onnx-gkp: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("onnx-gkp: interrupted, nothing written", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: still one line, and still nothing half-written
        print(
            f"onnx-gkp: internal error: {type(error).__name__}: {first_line(error)} (please report it)", file=sys.stderr
        )
        return 3
