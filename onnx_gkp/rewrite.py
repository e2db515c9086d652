"""Graph surgery: turn each planned Conv into gather -> grouped Conv -> gather.

For a Conv ``y = Conv(x, W, b)`` and its plan::

    x_k = Gather(x, in_index, axis=1)            # G*m kept channels, group by group
    y_g = Conv(x_k, W', b[filter_order], group=G) # channel g*n+i is filter S_g[i]
    y   = Gather(y_g, out_index, axis=1)         # back to the original filter order

``y`` keeps its name, so every consumer and graph output is untouched; the output gather is
left out when the order is already the original one. Strides, pads, dilations and auto_pad
stay as they were. The model keeps its IR version, opsets and metadata. This is the only
module that touches onnx-graphsurgeon; it knows nothing of how plans are made.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .analyse import ConvSite
from .plan import LayerPlan


def _intermediate(name: str, like: gs.Tensor, channels: Optional[int]) -> gs.Variable:
    """A new tensor shaped like ``like`` (``channels`` on axis 1); typed only if its shape is known.

    onnx.checker rejects a value_info with a type but no shape, so unknown stays unknown.
    """
    if like.shape is None or len(like.shape) < 2:
        return gs.Variable(name)
    shape = list(like.shape)
    if channels is not None:
        shape[1] = channels
    return gs.Variable(name, dtype=like.dtype, shape=shape)


def _regroup(graph: gs.Graph, conv: gs.Node, site: ConvSite, plan: LayerPlan, base: str) -> int:
    """Rewrite one Conv in place; returns the number of Gather nodes added."""
    x, y = conv.inputs[0], conv.outputs[0]
    gathered = _intermediate(f"{base}/gkp_gathered", x, int(plan.in_index.size))
    in_index = gs.Constant(f"{base}/gkp_in_index", plan.in_index)
    graph.nodes.append(
        gs.Node("Gather", f"{base}/gkp_gather_in", {"axis": 1}, inputs=[x, in_index], outputs=[gathered])
    )
    conv.inputs[0] = gathered
    conv.inputs[1] = gs.Constant(f"{base}/gkp_weight", plan.grouped_weight(site.weight))
    if site.bias is not None:
        conv.inputs[2] = gs.Constant(f"{base}/gkp_bias", plan.permuted_bias(site.bias))
    conv.attrs["group"] = plan.groups
    out_index = plan.out_index
    if np.array_equal(out_index, np.arange(out_index.size)):
        return 1
    grouped = _intermediate(f"{base}/gkp_grouped", y, None)
    conv.outputs[0] = grouped
    graph.nodes.append(
        gs.Node(
            "Gather", f"{base}/gkp_gather_out", {"axis": 1},
            inputs=[grouped, gs.Constant(f"{base}/gkp_out_index", out_index)], outputs=[y],
        )
    )
    return 2


def rewrite(
    model: onnx.ModelProto, sites: Sequence[ConvSite], plans: Sequence[LayerPlan]
) -> tuple[onnx.ModelProto, int]:
    """The pruned model and the number of Gather nodes it gained."""
    graph = gs.import_onnx(model)
    nodes = list(graph.nodes)
    gathers = 0
    for site, plan in zip(sites, plans):
        conv = nodes[site.node_index]
        base = conv.name or f"{conv.outputs[0].name}_conv"
        gathers += _regroup(graph, conv, site, plan, base)
    graph.cleanup().toposort()
    pruned = gs.export_onnx(graph, do_type_check=False, opset_imports=list(model.opset_import))
    pruned.ir_version = model.ir_version
    for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(pruned, field, getattr(model, field))
    del pruned.metadata_props[:]
    pruned.metadata_props.extend(model.metadata_props)
    return pruned, gathers
