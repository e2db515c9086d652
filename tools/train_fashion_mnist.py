"""Train the bundled ResNet-20-style Fashion-MNIST classifier and export it to ONNX.

The model is the project's stand-in for the CIFAR-10 ResNets of the GKP papers: three stages
of three basic blocks (16, 32, 64 channels), BatchNorm, residual adds, 1x1 projection
shortcuts. BatchNormalization is kept in the export (not folded into the Conv), as the
data-free compensation work needs its statistics.

Needs the CPU torch (``pip install torch==2.13.0``) and Debian's ``dataset-fashion-mnist``
(installed, or fetched as a pinned .deb by ``tools/debian_data.py``).
Usage: python tools/train_fashion_mnist.py --epochs 8 --out models/resnet20_fashion_mnist.onnx
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from debian_data import fetch_fashion_mnist
from real_data import FASHION_MEAN, FASHION_STD
from real_data import fashion_mnist as load_split
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 2-pixel shifts and horizontal flips."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    x = padded[:, :, dy : dy + 28, dx : dx + 28]
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            logits = model(torch.from_numpy(x[i : i + 1000]))
            correct += int((logits.argmax(1).numpy() == y[i : i + 1000]).sum())
    return correct / len(x)


def model_card(accuracy: float, epochs: int, seed: int) -> dict:
    """What ``models/resnet20_fashion_mnist.json`` says of the model: how it was trained, how well
    it does, and how its inputs are prepared."""
    return {
        "test_top1": accuracy,
        "epochs": epochs,
        "seed": seed,
        "torch": torch.__version__,
        "input": f"input: (N, 1, 28, 28) float32, Fashion-MNIST pixels as (x / 255 - {FASHION_MEAN}) / {FASHION_STD}",
        "mean": FASHION_MEAN,
        "std": FASHION_STD,
        "calibration": f"fashion_mnist_calibration.npz: 512 training images (seed 0), uint8; give --mean "
        f"{FASHION_MEAN} --std {FASHION_STD}",
    }


def write_calibration(path: Path, count: int = 512, seed: int = 0) -> None:
    """The bundled calibration set: ``count`` training images drawn with ``seed``, as uint8 pixels
    (the pass prepares them with ``--mean`` and ``--std``, as the model was trained)."""
    with gzip.open(fetch_fashion_mnist() / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    pick = np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))
    np.savez_compressed(path, input=images[pick])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("models/resnet20_fashion_mnist.onnx"))
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("t10k")
    model = ResNet20()
    steps = args.epochs * (len(x_train) // args.batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=steps)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for epoch in range(args.epochs):
        model.train()
        start = time.time()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(len(xt) // args.batch):
            idx = order[i * args.batch : (i + 1) * args.batch]
            loss = F.cross_entropy(model(augment(xt[idx], gen)), yt[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, x_test, y_test)
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}, test top-1 {acc:.4f}, "
            f"{time.time() - start:.0f} s",
            flush=True,
        )

    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 28, 28),),
        str(args.out),
        dynamo=False,
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=True,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    acc = evaluate(model, x_test, y_test)
    meta = model_card(acc, args.epochs, args.seed)
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    write_calibration(args.out.parent / "fashion_mnist_calibration.npz")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
