"""The command line's arguments: one line per option, in the groups ``--help`` shows, and the
strict parsers behind them (ASCII digits only: Python's ``int`` also reads '٤' as 4).

Every option is described in full in ``docs/usage.md``; the help here is the one-line reminder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import __version__
from .check.metrics import TARGET_METRICS
from .errors import GkpError
from .layer.kernels import CRITERIA
from .limits import DEFAULT_KEEP
from .options import Options
from .ship.int8 import CHOICES as QUANTIZE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every other refusal
        raise GkpError(message)


class _Help(argparse.RawDescriptionHelpFormatter):
    """Appends an option's default where it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default is None or default is False or default == [] or not action.option_strings:
            return str(action.help)
        text = ",".join(map(str, default)) if isinstance(default, tuple) else default
        return f"{action.help} (default {text})"


def _integer(text: str) -> int:
    if not (text.isascii() and text.lstrip("+-").isdigit()):
        raise ValueError(text)
    return int(text)


def _number(text: str) -> float:
    """A number in ASCII; nan and inf pass here, the options refuse them."""
    if not text.isascii():
        raise ValueError(text)
    return float(text)


_integer.__name__, _number.__name__ = "int", "float"  # argparse names the type in its message
REPEATED = dict(action="append", default=[])
DESCRIPTION = "Grouped Kernel Pruning with a flexible group count for ONNX CNNs."
EPILOG = f"""\
With no option of "how far to prune": given --calibration, the fidelity target --keep {DEFAULT_KEEP};
without data, the data-free default, which prunes only what it is sure costs nothing.

examples:
  onnx-gkp model.onnx pruned.onnx --calibration samples.npz --keep 0.98
  onnx-gkp model.onnx pruned.onnx --calibration photos/ --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
  onnx-gkp model.onnx pruned.onnx --calibration samples.npz --target-latency 0.7 --quantize int8

Every option in full: docs/usage.md. Exit codes: 0 written; 1 validation failed or could not run;
2 bad input or usage; 3 internal error; 130 interrupted (nothing is written unless 0)."""


def _groups(text: str) -> object:
    if text == "auto":
        return "auto"
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"--groups must be 'auto' or a positive integer, not {text!r}")


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
    p = _Parser(prog="onnx-gkp", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Help)
    p.add_argument("input", type=Path, help="model to prune (never modified)")
    p.add_argument("output", type=Path, help="where the pruned model is written")
    p.add_argument("--version", action="version", version=f"onnx-gkp {__version__}")
    _how_far(p.add_argument_group("how far to prune"))
    _how(p.add_argument_group("how to prune"))
    _data(p.add_argument_group("real inputs"))
    _output(p.add_argument_group("output"))
    return p


def _how_far(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--keep", type=_number, metavar="F", help=f"least held-out fidelity ({DEFAULT_KEEP} with data)")
    metrics = "the metric --keep reads for it: " + "/".join(TARGET_METRICS)
    g.add_argument("--fidelity", type=_pair("--fidelity", str), metavar="OUTPUT:METRIC", help=metrics, **REPEATED)
    g.add_argument(
        "--ratio", type=_number, metavar="R", help="the uniform mode: fraction of grouped kernels pruned in every layer"
    )
    g.add_argument("--target-macs", type=_number, metavar="F", help="remove the fraction F of the Conv MACs")
    g.add_argument("--target-latency", type=_number, metavar="F", help="take at most F of the original's time here")
    g.add_argument(
        "--quantize", choices=QUANTIZE, help="ship INT8 (onnxruntime static QDQ; int8 = types measured here)"
    )


def _how(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--groups", type=_groups, default=Options.groups, metavar="auto|N", help="'auto' (per layer) or one count N"
    )
    g.add_argument(
        "--max-groups", type=_integer, default=Options.max_groups, metavar="N", help="largest count 'auto' considers"
    )
    g.add_argument("--align", type=_integer, default=Options.align, metavar="N", help="kept channels per group: x N")
    g.add_argument("--criterion", choices=CRITERIA, default=Options.criterion, help="grouped-kernel score")
    g.add_argument(
        "--group-cost", type=_number, default=Options.group_cost, metavar="B", help="error a doubling of G must save"
    )
    g.add_argument("--quality-only", action="store_true", help="choose G for accuracy alone, untimed")
    g.add_argument(
        "--speed-slack", type=_number, default=Options.speed_slack, metavar="S", help="slack for a more accurate G"
    )
    g.add_argument(
        "--threads", type=_integer, default=Options.threads, metavar="N", help="onnxruntime threads for all timing"
    )
    g.add_argument("--cost-cache", type=Path, metavar="FILE.json", help="measured layer times (~/.cache/onnx_gkp)")
    g.add_argument("--no-compensation", action="store_true", help="no data-free bias compensation")
    g.add_argument("--include", metavar="REGEX", help="prune only Convs whose node name matches")
    g.add_argument("--exclude", metavar="REGEX", help="leave alone Convs whose node name matches")
    g.add_argument(
        "--min-in-channels", type=_integer, default=Options.min_in_channels, metavar="N", help="leave thinner Convs"
    )
    g.add_argument(
        "--seed", type=_integer, default=Options.seed, metavar="N", help="seed of clustering and validation inputs"
    )
    g.add_argument("--apply", type=Path, metavar="PLAN.json", help="apply an earlier run's plan (its --report)")


def _data(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--calibration", metavar="FILE|FOLDER", help="the model's own inputs: .npz, .npy or images")
    g.add_argument("--image-size", type=_size, metavar="HxW", help="images: resized to this (default: the input's)")
    g.add_argument(
        "--mean", type=_numbers, default=(0.0,), metavar="M[,M,M]", help="images, uint8 arrays: minus this, in [0, 1]"
    )
    g.add_argument(
        "--std", type=_numbers, default=(1.0,), metavar="S[,S,S]", help="images, uint8 arrays: divided by this"
    )
    g.add_argument("--channel-order", choices=("RGB", "BGR", "L"), default="RGB", help="images: channel order")
    g.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW", help="images: the input's layout")
    g.add_argument("--strict", action="store_true", help="refuse calibration data that fails a check (exit 2)")
    value = _pair("--input-value", float)
    g.add_argument(
        "--input-value", type=value, metavar="NAME=V", help="without data: feed an integer input", **REPEATED
    )
    g.add_argument(
        "--test-shape", type=_test_shape, metavar="NAME:d0,d1,...", help="a dynamic input's shape", **REPEATED
    )


def _output(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--report", type=Path, metavar="FILE.json", help="write the full report (and its plan) as JSON")
    g.add_argument("--plot", type=Path, metavar="FILE.html", help="draw each Conv's MACs, G and kept fraction")
    g.add_argument("--no-validate", action="store_true", help="skip the check against the masked reference")
    g.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    g.add_argument("--save-external-data", action="store_true", help="weights in OUT.data (automatic past 2 GiB)")
    g.add_argument("--quiet", action="store_true", help="print only the summary")
    g.add_argument("--verbose", action="store_true", help="also print the time each stage took")
