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
from .arguments import build_parser
from .cost.table import default_cache_path
from .errors import GkpError
from .io.model_file import first_line, save_model, write_atomic
from .io.paths import check_run_paths
from .io.samples import Preprocess
from .options import Options
from .plan.model import Plan
from .report.plot import PLOT_SUFFIXES, write_plot


def run(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _check_paths(args)
    if args.plot and args.plot.suffix.lower() not in PLOT_SUFFIXES:
        raise GkpError(f"--plot writes .html or .svg, not {args.plot.suffix or 'a file without suffix'}")
    model, report = prune(args.input, _options(args))
    for check in report.calibration_checks or ():  # even with --quiet: the figures below may mean nothing
        print(f"onnx-gkp: warning: calibration data: {check.message}", file=sys.stderr)
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
        strict=args.strict,
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
