"""How much block-wise reconstruction would add to the pass's layer-wise refit on MobileNetV2.

Not the pass: a measurement, in torch (the ``zoo`` extra), of a refit the pass does not have: a
block-wise one on MobileNetV2. Every inverted residual but the first loses ``--ratio`` of its hidden channels (kept
counts in multiples of 8), in graph order, each block fed by the network pruned so far:

* ``layer-wise``: what the pass does. The projection's kept inputs are chosen and its weights and
  bias solved by :class:`onnx_gkp.refit.ridge.GroupedRidge` (backward elimination, ridge) to match
  the original projection's output; the expand and depthwise Convs lose the same channels.
* ``block-wise``: the same, then ``--steps`` of Adam on every parameter the block keeps (expand,
  depthwise and projection weights, the BNs' scales and shifts; running statistics fixed) to match
  the original block's output (the residual sum where there is one), 16 crops a step.

Fitted on 384 random crops of the photo set's calibration photos; scored on the centre crops of its
202 evaluation photos (top-1 / top-5 agreement with the original, KL of the softmax).

    python tools/block_reconstruction.py --ratio 0.25 --steps 1000 --lr 5e-4
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import real_data
import torch
import torch_models
from torch import nn
from zoo import MODELS, cache_dir, fetch_member

from onnx_gkp.refit.ridge import GroupedRidge

FIT, POSITIONS, BATCH = 384, 64, 32


def _batched(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([module(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])


def agreement(original: torch.Tensor, pruned: torch.Tensor) -> str:
    top = original.argmax(1)
    five = pruned.topk(5, 1).indices
    log_o, log_p = original.log_softmax(1), pruned.log_softmax(1)
    kl = (log_o.exp() * (log_o - log_p)).sum(1).clamp_min(0).mean()
    top1, top5 = (pruned.argmax(1) == top).float().mean(), (five == top[:, None]).any(1).float().mean()
    return f"{top1:.3f} / {top5:.3f} / KL {kl:.3f}"


def _sampled(t: torch.Tensor, where: torch.Tensor) -> np.ndarray:
    """``t`` [N, C, H, W] at ``where`` [N, P] flat positions, as rows [N * P, C] in float64."""
    rows = torch.gather(t.flatten(2), 2, where[:, None, :].expand(-1, t.shape[1], -1))
    return rows.permute(0, 2, 1).reshape(-1, t.shape[1]).double().numpy()


def _layer_wise(
    block: nn.Module, whole: nn.Module, x_pruned: torch.Tensor, x_whole: torch.Tensor, ratio: float, seed: int
) -> None:
    """Trim ``block``'s hidden channels to those the projection's ridge keeps, in place."""
    expand, depthwise, projection, bn = block.conv
    hidden = projection.in_channels
    keep = max(8, round(hidden * (1 - ratio) / 8) * 8)
    h = _batched(nn.Sequential(expand, depthwise), x_pruned)
    z = _batched(nn.Sequential(*whole.conv[:3]), x_whole)
    generator = torch.Generator().manual_seed(seed)
    where = torch.stack(
        [torch.randperm(h.shape[2] * h.shape[3], generator=generator)[:POSITIONS] for _ in range(len(h))]
    )
    ridge = GroupedRidge([range(z.shape[1])], [range(hidden)], hidden, 1)
    ridge.add(_sampled(h, where)[:, :, None], _sampled(z, where))
    kept = ridge.select(keep, 1e-3)[0]
    weight, bias = ridge.solve(projection.weight.detach().double().numpy(), np.zeros(projection.out_channels), 1e-3)
    index = torch.from_numpy(kept)
    for part in (expand, depthwise):
        conv, norm = part[0], part[1]
        conv.weight.data = conv.weight.data[index].clone()
        conv.out_channels = keep
        if conv.groups > 1:
            conv.groups = conv.in_channels = keep
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(norm, name).data = getattr(norm, name).data[index].clone()
        norm.num_features = keep
    refitted = nn.Conv2d(keep, projection.out_channels, 1, bias=True)
    refitted.weight.data = torch.from_numpy(weight[:, kept]).float()
    refitted.bias.data = torch.from_numpy(bias).float()
    block.conv[2] = refitted


def _block_wise(
    block: nn.Module, x_pruned: torch.Tensor, target: torch.Tensor, steps: int, lr: float, seed: int
) -> None:
    """Adam on the block's parameters towards the original block's output; BN statistics fixed."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(block.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    for _ in range(steps):
        pick = torch.randint(0, len(x_pruned), (16,), generator=generator)
        loss = torch.mean((block(x_pruned[pick]) - target[pick]) ** 2)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()


def pruned_network(net: nn.Module, fit: torch.Tensor, ratio: float, steps: int, lr: float) -> nn.Module:
    pruned = copy.deepcopy(net)
    x_whole = _batched(net.features[0], fit)
    x_pruned = x_whole.clone()
    for index in range(1, 18):
        whole, block = net.features[index], pruned.features[index]
        target = _batched(whole, x_whole)
        if index > 1:  # block 1 has no expand Conv: its hidden channels are the stem's, left whole
            _layer_wise(block, whole, x_pruned, x_whole, ratio, index)
            if steps:
                _block_wise(block, x_pruned, target, steps, lr, index)
        x_pruned, x_whole = _batched(block, x_pruned), target
    return pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()
    torch.manual_seed(0)
    net = torch_models.MobileNetV2()
    source = MODELS["mobilenet_v2_imagenet"].source
    checkpoint = fetch_member(source, cache_dir() / "checkpoints" / Path(source.path).name)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    net.eval()
    fit = torch.from_numpy(
        real_data.calibration_crops(512, 224, True, pictures=real_data.photo_set_paths("calibration"))[:FIT]
    )
    evaluation = torch.from_numpy(real_data.photo_set("evaluation"))
    original = _batched(net, evaluation)
    print(
        f"| refit, hidden ratio {args.ratio:g} | parameters kept | top-1 / top-5 / KL, 202 unseen photos | time "
        "|\n|---|---|---|---|"
    )
    for label, steps in (
        ("layer-wise (the pass)", 0),
        (f"block-wise, {args.steps} Adam steps at {args.lr:g}", args.steps),
    ):
        start = time.perf_counter()
        pruned = pruned_network(net, fit, args.ratio, steps, args.lr)
        kept = sum(p.numel() for p in pruned.parameters()) / sum(p.numel() for p in net.parameters())
        print(
            f"| {label} | {kept:.1%} | {agreement(original, _batched(pruned, evaluation))} | "
            f"{time.perf_counter() - start:.0f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
