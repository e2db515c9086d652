"""onnx_gkp: Grouped Kernel Pruning with a flexible group count, directly on ONNX models.

``prune(model, ratio=0.5, groups="auto")`` returns the pruned ``onnx.ModelProto`` and a
:class:`Report` whose ``plan`` :func:`apply` turns into the same model again (also from its
JSON: ``Plan.from_dict``); :class:`Options` holds every option and its default; ``validate``
checks a pruned model against its masked reference; ``save_model`` writes one atomically
(external data past protobuf's 2 GiB).
"""

from .api import prune
from .check.reference import masked_reference
from .check.validate import Validation, validate
from .errors import GkpError, ValidationFailed
from .io.model_file import save_model
from .layer.planner import LayerPlan, PlanOptions, plan_layer
from .options import Options
from .plan.model import Plan
from .report.report import Report
from .rewrite.model import apply

__all__ = [
    "GkpError",
    "LayerPlan",
    "Options",
    "Plan",
    "PlanOptions",
    "Report",
    "Validation",
    "ValidationFailed",
    "apply",
    "masked_reference",
    "plan_layer",
    "prune",
    "save_model",
    "validate",
]
__version__ = "0.1.0"
