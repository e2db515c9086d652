"""What a Conv is to the timer: its input shape, weight shape and attributes, and the variants
``(G, m, input gathered)`` a plan may rewrite it into.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

GEOMETRY_ATTRS = ("strides", "pads", "dilations", "auto_pad")


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about a Conv that decides its run time, and nothing else."""

    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    attributes: tuple[tuple[str, object], ...]
    dtype: str
    bias: bool

    @property
    def key(self) -> str:
        attrs = ",".join(f"{k}={v}" for k, v in self.attributes)
        return f"{self.dtype} x{list(self.input_shape)} w{list(self.weight_shape)} {attrs} bias={int(self.bias)}"

    @property
    def dense(self) -> Variant:
        return (1, self.weight_shape[1], False)


def geometry_of(
    input_shape: Optional[Sequence[int]], weight: np.ndarray, attributes: dict[str, object], bias: bool
) -> Optional[ConvGeometry]:
    """The geometry of a Conv whose input shape is known, else None (its cost cannot be measured)."""
    if input_shape is None or any(not isinstance(d, int) or d < 1 for d in input_shape):
        return None
    attrs = tuple((k, attributes[k]) for k in GEOMETRY_ATTRS if k in attributes)
    return ConvGeometry(tuple(input_shape), tuple(weight.shape), attrs, str(weight.dtype), bias)


Variant = tuple[int, int, bool]  # (G, m, input gathered); (1, C_in, False) is the dense Conv
