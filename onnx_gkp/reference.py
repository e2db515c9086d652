"""The masked reference: the original model with every pruned kernel zeroed.

The dense rewrite must equal it up to float summation order; that identity is what
validation checks. Built straight on the protobuf (initializer or ``Constant`` value
replaced), independently of the graph surgery it checks.
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
    weights = {
        model.graph.node[s.node_index].input[1]: p.masked_weight(s.weight) for s, p in zip(sites, plans)
    }
    for index, tensor in enumerate(masked.graph.initializer):
        if tensor.name in weights:
            masked.graph.initializer[index].CopyFrom(numpy_helper.from_array(weights[tensor.name], tensor.name))
    for node in masked.graph.node:
        if node.op_type == "Constant" and node.output[0] in weights:
            for attr in node.attribute:
                if attr.name == "value":
                    attr.t.CopyFrom(numpy_helper.from_array(weights[node.output[0]], attr.t.name))
    return masked
