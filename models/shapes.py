"""Standard CNN shapes (ResNet-18/50, VGG-16, MobileNetV2) with random weights, built with onnx.helper.

Speed benchmarks of the pruning pass need the real layer shapes, not trained weights, so these
builders write the torchvision layouts straight to ONNX without torch. Usage::

    python models/shapes.py resnet50 resnet50.onnx --seed 0 [--batch-norm]

Conv and Gemm nodes are named after torchvision's module paths (layer1.0.conv1, layer1.0.downsample.0,
features.3.conv.1.0, ...), so --include/--exclude regexes carry over; BN and activation nodes take
the Conv's name plus ".bn", ".relu" or ".relu6".
"""

from __future__ import annotations

import argparse
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2's bottlenecks.
MOBILENET_V2_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
IR_VERSION = 8  # what onnx 1.12 (which introduced opset 17) writes; onnxruntime 1.31 reads IR <= 13


class _Builder:
    """Writes nodes and initializers straight into one ModelProto; node outputs are named after the node.

    Building in place matters for VGG-16: make_graph and make_model would copy its 550 MB twice.
    """

    def __init__(self, name: str, seed: int, batch_norm: bool) -> None:
        self.rng = np.random.default_rng(seed)
        self.batch_norm = batch_norm
        self.clip_bounds: list[str] = []
        self.proto = helper.make_model(
            helper.make_graph(
                [],
                name,
                [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
            ),
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="onnx_gkp models/shapes.py",
        )
        self.proto.ir_version = IR_VERSION

    def param(self, name: str, array: np.ndarray) -> str:
        array = np.asarray(array, dtype="<f4")  # raw_data is little-endian float32
        self.proto.graph.initializer.add(
            name=name, dims=array.shape, data_type=TensorProto.FLOAT, raw_data=array.tobytes()
        )
        return name

    def normal(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        array = self.rng.standard_normal(shape, dtype=np.float32)
        array *= np.float32(std)
        return array

    def node(self, op: str, name: str, inputs: list[str], output: Optional[str] = None, **attrs) -> str:
        output = output or name
        self.proto.graph.node.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def act(self, x: str, name: str, kind: str) -> str:
        if kind == "relu":
            return self.node("Relu", name, [x])
        if not self.clip_bounds:  # since opset 11 Clip takes min and max as inputs, not attributes
            self.clip_bounds = [self.param("relu6.min", np.array(0.0)), self.param("relu6.max", np.array(6.0))]
        return self.node("Clip", name, [x, *self.clip_bounds])

    def conv(
        self,
        x: str,
        name: str,
        channels: tuple[int, int],
        k: int,
        stride: int = 1,
        groups: int = 1,
        act: Optional[str] = None,
        gain: float = 1.0,
    ) -> str:
        """Conv (+ BatchNormalization) (+ activation ``act``: "relu" or "relu6"); returns the output name.

        He-normal weights (std = gain * sqrt(2 / fan_in)) keep the activation scale roughly constant
        with depth; with ``batch_norm=False`` the BN counts as folded, so the Conv carries a bias.
        ``channels``: (input, output).
        """
        cin, cout = channels
        std = gain * np.sqrt(2.0 / (cin // groups * k * k))
        inputs = [x, self.param(f"{name}.weight", self.normal((cout, cin // groups, k, k), std))]
        if not self.batch_norm:
            inputs.append(self.param(f"{name}.bias", self.normal((cout,), 0.01)))
        y = self.node(
            "Conv", name, inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=groups
        )
        if self.batch_norm:
            stats = [
                1.0 + self.normal((cout,), 0.1),
                self.normal((cout,), 0.1),
                self.normal((cout,), 0.1),
                self.rng.uniform(0.5, 1.5, cout),
            ]
            suffixes = ["weight", "bias", "running_mean", "running_var"]
            y = self.node(
                "BatchNormalization",
                f"{name}.bn",
                [y] + [self.param(f"{name}.bn.{s}", a) for s, a in zip(suffixes, stats)],
            )
        return self.act(y, f"{name}.{act}", act) if act else y

    def head(self, x: str, cin: int, name: str = "fc") -> str:
        """GlobalAveragePool, Flatten, Gemm to 1000 classes (torchvision Linear layout, transB=1)."""
        x = self.node("Flatten", "flatten", [self.node("GlobalAveragePool", "avgpool", [x])], axis=1)
        return self.linear(x, name, cin, 1000, output="logits")

    def linear(self, x: str, name: str, cin: int, cout: int, output: Optional[str] = None) -> str:
        w = self.param(f"{name}.weight", self.normal((cout, cin), np.sqrt(2.0 / cin)))
        b = self.param(f"{name}.bias", self.normal((cout,), 0.01))
        return self.node("Gemm", name, [x, w, b], output=output, transB=1)


def _stem(b: _Builder) -> str:
    x = b.conv("input", "conv1", (3, 64), 7, stride=2, act="relu")
    return b.node("MaxPool", "maxpool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])


def _resnet(name: str, blocks: list[int], bottleneck: bool, seed: int, batch_norm: bool) -> onnx.ModelProto:
    """torchvision ResNet (v1.5: the stride sits on the 3x3 conv of a bottleneck).

    Without trained BN statistics nothing renormalises the residual sums, so the last conv of each
    branch gets gain 1/sqrt(#blocks): the scale then grows by at most (1 + 1/B)^B < e over the net
    instead of 2^B (measured: logits rms ~2 instead of ~2400 for ResNet-50). The downsample conv
    gets sqrt(1/2) because its input is already post-ReLU, so it matches the identity it replaces.
    """
    b = _Builder(name, seed, batch_norm)
    x, cin, expansion = _stem(b), 64, 4 if bottleneck else 1
    gain = 1.0 / np.sqrt(sum(blocks))
    for stage, (count, width) in enumerate(zip(blocks, [64, 128, 256, 512]), start=1):
        for i in range(count):
            p, stride, cout = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1, width * expansion
            if bottleneck:
                y = b.conv(x, f"{p}.conv1", (cin, width), 1, act="relu")
                y = b.conv(y, f"{p}.conv2", (width, width), 3, stride=stride, act="relu")
                y = b.conv(y, f"{p}.conv3", (width, cout), 1, gain=gain)
            else:
                y = b.conv(x, f"{p}.conv1", (cin, width), 3, stride=stride, act="relu")
                y = b.conv(y, f"{p}.conv2", (width, cout), 3, gain=gain)
            if stride != 1 or cin != cout:
                x = b.conv(x, f"{p}.downsample.0", (cin, cout), 1, stride=stride, gain=np.sqrt(0.5))
            x, cin = b.node("Relu", f"{p}.relu", [b.node("Add", f"{p}.add", [x, y])]), cout
    b.head(x, cin)
    return b.proto


def resnet18(seed: int = 0, batch_norm: bool = False) -> onnx.ModelProto:
    """ResNet-18: basic blocks [2, 2, 2, 2]; 20 Convs, 11.7M parameters."""
    return _resnet("resnet18", [2, 2, 2, 2], False, seed, batch_norm)


def resnet50(seed: int = 0, batch_norm: bool = False) -> onnx.ModelProto:
    """ResNet-50: bottleneck blocks [3, 4, 6, 3], expansion 4; 53 Convs, 25.5M parameters."""
    return _resnet("resnet50", [3, 4, 6, 3], True, seed, batch_norm)


def vgg16(seed: int = 0, batch_norm: bool = False) -> onnx.ModelProto:
    """VGG-16 with the full torchvision classifier 25088 -> 4096 -> 4096 -> 1000 (138M parameters).

    The big head is kept so the parameter count matches torchvision; at 224x224 the features are
    already 7x7, so torchvision's AdaptiveAvgPool2d((7, 7)) is the identity and is left out.
    Dropout is inference-time identity and is left out too.
    """
    b = _Builder("vgg16", seed, batch_norm)
    x, cin, index = "input", 3, 0
    for width in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if width == "M":
            x = b.node("MaxPool", f"features.{index}", [x], kernel_shape=[2, 2], strides=[2, 2])
            index += 1
        else:
            x, cin = b.conv(x, f"features.{index}", (cin, width), 3, act="relu"), width
            index += 2  # torchvision numbers Conv and ReLU separately
    x = b.node("Flatten", "flatten", [x], axis=1)
    x = b.node("Relu", "classifier.1", [b.linear(x, "classifier.0", 512 * 7 * 7, 4096)])
    x = b.node("Relu", "classifier.4", [b.linear(x, "classifier.3", 4096, 4096)])
    b.linear(x, "classifier.6", 4096, 1000, output="logits")
    return b.proto


def mobilenet_v2(seed: int = 0, batch_norm: bool = False) -> onnx.ModelProto:
    """torchvision MobileNetV2 (width 1.0): 17 inverted residual blocks, 52 Convs, 3.5M parameters.

    A projection feeds the next conv without a ReLU in between, so it gets gain sqrt(1/2) to cancel
    the factor 2 of that conv's He init; projections ending in a residual Add get another
    1/sqrt(#residual blocks), for the same reason as in the ResNets.
    """
    b = _Builder("mobilenet_v2", seed, batch_norm)
    x, cin, index = b.conv("input", "features.0.0", (3, 32), 3, stride=2, act="relu6"), 32, 1
    residual_gain = np.sqrt(0.5 / sum(n - 1 for _, _, n, _ in MOBILENET_V2_BLOCKS))
    for t, cout, n, s in MOBILENET_V2_BLOCKS:
        for i in range(n):
            p, stride, hidden, k = f"features.{index}.conv", s if i == 0 else 1, cin * t, 0
            y = x
            if t != 1:
                y, k = b.conv(y, f"{p}.0.0", (cin, hidden), 1, act="relu6"), 1
            y = b.conv(y, f"{p}.{k}.0", (hidden, hidden), 3, stride=stride, groups=hidden, act="relu6")
            residual = stride == 1 and cin == cout
            y = b.conv(y, f"{p}.{k + 1}", (hidden, cout), 1, gain=residual_gain if residual else np.sqrt(0.5))
            x = b.node("Add", f"features.{index}.add", [x, y]) if residual else y
            cin, index = cout, index + 1
    x = b.conv(x, "features.18.0", (cin, 1280), 1, act="relu6")
    b.head(x, 1280, name="classifier.1")
    return b.proto


BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vgg16": vgg16,
    "mobilenet_v2": mobilenet_v2,
}


def build(name: str, seed: int = 0, batch_norm: bool = False) -> onnx.ModelProto:
    """The model called ``name`` (a key of BUILDERS); the same seed gives byte-identical output."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(BUILDERS)}")
    return BUILDERS[name](seed=seed, batch_norm=batch_norm)


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description="Write a standard CNN shape with random weights as ONNX.")
    p.add_argument("name", choices=list(BUILDERS))
    p.add_argument("output", help="path of the .onnx file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-norm", action="store_true", help="unfolded BatchNormalization after each Conv")
    args = p.parse_args(argv)
    onnx.save_model(build(args.name, args.seed, args.batch_norm), args.output)


if __name__ == "__main__":
    main()
