"""Every option of a run, with its default, in one place: the API, the CLI and the report read it.

``Options`` is checked when made (bad values raise :class:`GkpError` with the reason), so a run
never starts on an option it would ignore or misread. What depends on the model (its output
names for ``metrics``, whether there is data for ``keep``) is checked by :func:`mode`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Optional

from .check.metrics import TARGET_METRICS
from .errors import GkpError
from .io.samples import Calibration, Preprocess
from .layer.planner import Groups, PlanOptions
from .plan.model import Plan
from .ship.int8 import CHOICES as QUANTIZE

Mode = Literal["plan", "target", "uniform", "keep", "data-free"]  # each picks its policy (api.POLICIES)

MAX_THREADS = 4 * (os.cpu_count() or 1)  # more only queue: 10000 threads ran for minutes
DEFAULT_RATIO = PlanOptions.ratio  # outside the uniform mode (only PlanOptions' refusal of tiny layers reads it)


@dataclass(frozen=True)
class Target:
    """``macs``: the fraction of the model's Conv MACs to remove; ``latency``: the pruned
    model's onnxruntime time as a fraction of the original's."""

    kind: Literal["macs", "latency"]
    fraction: float

    def __post_init__(self) -> None:
        if self.kind == "macs" and not 0.0 < self.fraction < 1.0:
            raise ValueError(f"target_macs must be in (0, 1), got {self.fraction}")
        if self.kind == "latency" and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"target_latency must be in (0, 1], got {self.fraction}")


@dataclass(frozen=True)
class Options:
    """What ``prune`` is asked to do; the defaults are the tool's."""

    ratio: Optional[float] = None
    groups: Groups = PlanOptions.groups
    criterion: str = PlanOptions.criterion
    max_groups: int = PlanOptions.max_groups
    group_cost: float = PlanOptions.group_cost
    include: Optional[str] = None
    exclude: Optional[str] = None
    min_in_channels: int = 4
    test_shapes: Optional[dict[str, tuple[int, ...]]] = None
    seed: int = PlanOptions.seed
    runtime_aware: bool = True
    speed_slack: float = PlanOptions.speed_slack
    align: int = PlanOptions.align
    threads: int = 1
    cost_cache: Optional[Path] = None
    compensate: bool = True
    calibration: Optional[Calibration] = field(default=None, repr=False)
    preprocess: Optional[Preprocess] = None
    keep: Optional[float] = None
    metrics: Optional[dict[str, str]] = None
    input_values: Optional[dict[str, float]] = None
    target_macs: Optional[float] = None
    target_latency: Optional[float] = None
    quantize: Optional[str] = None
    check: bool = True
    latency_runs: int = 20
    progress: bool = False
    plan: Optional[Plan] = field(default=None, repr=False)  # apply this plan instead of making one
    strict: bool = False  # refuse calibration data that fails a check (check/calibration.py)

    @classmethod
    def applying(cls, plan: Plan, **overrides: Any) -> "Options":
        """Options that apply ``plan``: its analysis options name the Convs its node indices do."""
        a = plan.analysis
        return cls(
            plan=plan,
            include=a.get("include"),
            exclude=a.get("exclude"),
            min_in_channels=int(a.get("min_in_channels", 4)),
            test_shapes=a.get("test_shapes"),
            **overrides,
        )

    def __post_init__(self) -> None:
        self.plan_options  # refuses a bad ratio, groups, criterion, group cost, slack or seed
        if not 1 <= self.threads <= MAX_THREADS:
            raise GkpError(f"threads must be between 1 and {MAX_THREADS} (4 per CPU core), got {self.threads}")
        if self.min_in_channels < 0:
            raise GkpError(f"min_in_channels must be >= 0, got {self.min_in_channels}")
        self._check_modes()

    def _check_modes(self) -> None:
        """Refuse options that ask for two modes at once (``mode`` resolves the rest with the model)."""
        target = self.target  # refuses both targets at once, or one out of range
        if self.keep is not None and not 0.0 < self.keep <= 1.0:
            raise GkpError(f"keep must be in (0, 1], got {self.keep}")
        if self.plan is not None and (self.ratio is not None or target is not None or self.keep is not None):
            raise GkpError("a plan is applied as it is: give it without a ratio, a target or keep")
        if self.ratio is not None and target is not None:
            raise GkpError("ratio is the uniform mode; give it or a target, not both")
        if self.ratio is not None and self.keep is not None:
            raise GkpError("ratio is the uniform mode; give it or keep, not both")

    @classmethod
    def of(cls, options: Optional["Options"], overrides: dict[str, Any]) -> "Options":
        """``options`` (or the defaults) with ``overrides``; an unknown name is refused."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"prune() got unexpected options: {', '.join(unknown)}")
        return replace(options or cls(), **overrides)

    @property
    def plan_options(self) -> PlanOptions:
        try:
            return PlanOptions(
                DEFAULT_RATIO if self.ratio is None else self.ratio,
                self.groups,
                self.criterion,  # type: ignore[arg-type]
                self.max_groups,
                self.group_cost,
                self.seed,
                self.speed_slack,
                self.align,
            )
        except ValueError as error:
            raise GkpError(str(error)) from None

    @property
    def target(self) -> Optional[Target]:
        if self.target_macs is not None and self.target_latency is not None:
            raise GkpError("give --target-macs or --target-latency, not both")
        try:
            if self.target_macs is not None:
                return Target("macs", float(self.target_macs))
            if self.target_latency is not None:
                return Target("latency", float(self.target_latency))
        except ValueError as error:
            raise GkpError(str(error)) from None
        return None

    @property
    def timed(self) -> bool:
        """Whether layers are timed on this machine to choose (the runtime-aware default, or a latency target)."""
        target = self.target
        return target.kind == "latency" if target is not None else self.runtime_aware and self.groups == "auto"

    def mode(self, has_data: bool, outputs: set[str]) -> Mode:
        """``plan``, ``target``, ``uniform`` (an explicit ratio), ``keep`` (a fidelity target; the default
        with data) or ``data-free`` (a conservative estimated-error allowance; the default without)."""
        for name, metric in (self.metrics or {}).items():
            if name not in outputs or metric not in TARGET_METRICS:
                raise GkpError(
                    f"fidelity metric {name}:{metric}: outputs are {', '.join(sorted(outputs))}; "
                    f"metrics are {', '.join(TARGET_METRICS)}"
                )
        if self.keep is not None and not has_data:
            raise GkpError("keep is measured on real inputs: give calibration data")
        if self.plan is not None:
            return "plan"
        if self.target is not None:  # it governs; a keep given with it is checked and reported
            return "target"
        if self.ratio is not None:
            return "uniform"
        return "keep" if has_data else "data-free"

    def check_quantize(self, has_data: bool) -> None:
        if self.quantize is not None and (self.quantize not in QUANTIZE or not has_data):
            raise GkpError(
                f"quantize is one of {', '.join(QUANTIZE)} and calibrates on real inputs: give calibration data"
                if self.quantize in QUANTIZE
                else f"quantize must be one of {', '.join(QUANTIZE)}, got {self.quantize!r}"
            )

    def record(self, mode: str, keep: Optional[float], samples: Optional[dict[str, int]]) -> dict[str, Any]:
        """The options as the report states them."""
        return {
            "ratio": self.ratio if mode == "uniform" else None,
            "mode": mode,
            "keep": keep,
            "groups": self.groups,
            "criterion": self.criterion,
            "max_groups": self.max_groups,
            "group_cost": self.group_cost,
            "include": self.include,
            "exclude": self.exclude,
            "min_in_channels": self.min_in_channels,
            "seed": self.seed,
            "runtime_aware": self.runtime_aware,
            "speed_slack": self.speed_slack,
            "align": self.align,
            "threads": self.threads,
            "compensate": self.compensate,
            "calibration_samples": samples,
            "metrics": self.metrics or {},
            "target_macs": self.target_macs,
            "target_latency": self.target_latency,
            "quantize": self.quantize,
        }
