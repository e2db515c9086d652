"""The masked reference: the original model with every pruned kernel zeroed.

The dense rewrite must equal it up to float summation order; that identity is what
validation checks. Built straight on the protobuf, independently of the graph surgery it checks: each
pruned Conv reads a new initializer holding its masked weight, wherever the original weight
came from (initializer, ``Constant`` node, ``Identity`` copy), and its bias (plus
``bias_delta`` where the layer is compensated), likewise.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import onnx

from ..analyse.sites import ConvSite
from ..layer.planner import LayerPlan
from ..limits import STRIPPED
from ..runtime.sessions import Stubs, filled


def masked_reference(model: onnx.ModelProto, sites: Sequence[ConvSite], plans: Sequence[LayerPlan]) -> onnx.ModelProto:
    """A copy of ``model`` whose planned Conv weights have their pruned kernels set to zero."""
    masked, stubs = masked_stubs(model, sites, plans)
    return filled(masked, stubs)


def masked_stubs(
    model: onnx.ModelProto, sites: Sequence[ConvSite], plans: Sequence[LayerPlan]
) -> tuple[onnx.ModelProto, Stubs]:
    """The masked reference with its new weights and biases as stubs, and how to make each:
    a large model's reference is then made a part at a time (``sessions.run_in_parts``), never
    whole."""
    masked = onnx.ModelProto()
    masked.CopyFrom(model)
    stubs = {}
    for site, plan in zip(sites, plans):
        node = masked.graph.node[site.node_index]
        name = f"{node.input[1]}/gkp_masked"
        stubs[name] = functools.partial(plan.masked_weight, site.weight)
        masked.graph.initializer.append(_stub(name, site.weight))
        node.input[1] = name
        bias = plan.compensated_bias(site.bias, site.weight.dtype)
        if bias is not None:  # the site's own: compensated, or refitted from calibration data
            stubs[f"{name}/bias"] = functools.partial(np.asarray, bias)
            masked.graph.initializer.append(_stub(f"{name}/bias", bias))
            del node.input[2:]
            node.input.append(f"{name}/bias")
    return masked, stubs


def _stub(name: str, like: np.ndarray) -> onnx.TensorProto:
    tensor = onnx.TensorProto(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(like.dtype), dims=like.shape)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=STRIPPED)
    return tensor
