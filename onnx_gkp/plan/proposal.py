"""What a policy hands on to the rest of the run: a value, not edits to shared state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..analyse.sites import ConvSite, Skip
from .model import Pairs


@dataclass(frozen=True)
class Proposal:
    """The layers a policy prunes (``pairs``), those it leaves whole (``whole``, which a ``G = 1``
    reader may still trim) with its reasons (``skipped``), and what it measured to choose.

    ``decisions`` go into the plan's record; ``records`` are the budget's per-layer notes for the
    report; ``trail`` is every ``(allowance, score)`` a fidelity search tried. ``as_given``: a
    plan applied as it is (not refitted); ``guard``: whether the end-to-end guard should measure
    it (a latency budget or a given plan has settled that already).
    """

    pairs: Pairs
    whole: list[ConvSite] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    decisions: dict[str, Any] = field(default_factory=dict)
    records: Optional[dict[int, dict]] = None
    trail: list[tuple[float, float]] = field(default_factory=list)
    as_given: bool = False
    guard: bool = True
