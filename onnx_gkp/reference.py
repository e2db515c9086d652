"""The masked reference: the original model with every pruned kernel zeroed.

The dense rewrite must equal it up to float summation order; that identity is what
validation checks. Built straight on the protobuf, independently of the graph surgery it checks: each
pruned Conv reads a new initializer holding its masked weight, wherever the original weight
came from (initializer, ``Constant`` node, ``Identity`` copy), and its bias (plus
``bias_delta`` where the layer is compensated), likewise.
"""

from __future__ import annotations

from typing import Sequence

import onnx
from onnx import numpy_helper

from .analyse import ConvSite
from .plan import LayerPlan


def masked_reference(
    model: onnx.ModelProto, sites: Sequence[ConvSite], plans: Sequence[LayerPlan]
) -> onnx.ModelProto:
    """A copy of ``model`` whose planned Conv weights have their pruned kernels set to zero."""
    masked = onnx.ModelProto()
    masked.CopyFrom(model)
    for site, plan in zip(sites, plans):
        node = masked.graph.node[site.node_index]
        name = f"{node.input[1]}/gkp_masked"
        masked.graph.initializer.append(numpy_helper.from_array(plan.masked_weight(site.weight), name))
        node.input[1] = name
        bias = plan.compensated_bias(site.bias, site.weight.dtype)
        if bias is not None:  # the site's own: compensated, or refitted from calibration data
            masked.graph.initializer.append(numpy_helper.from_array(bias, f"{name}/bias"))
            del node.input[2:]
            node.input.append(f"{name}/bias")
    return masked
