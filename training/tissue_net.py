"""The CT tissue network and the anatomy-aware loss (training/anatomy.py is its command line).

Its own module so the losses (training/drifting.py, training/features.py) can use it without importing the
training configuration, which imports the losses: no import cycle.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from modelspec import normalised_to_hu
from training.errors import TrainingError

LOG = logging.getLogger("training.anatomy")

TISSUES = ("air", "lung", "fat", "soft tissue", "bone")
TISSUE_EDGES_HU = (-850.0, -350.0, -30.0, 200.0)
DEFAULT_WIDTHS = (8, 16, 32, 64)  # 0.12 M parameters; 0.33 GFLOP per 128 x 128 crop, so the loss adds little


def tissue_classes(ct_hu: torch.Tensor) -> torch.Tensor:
    """Class index per voxel (int64, 0 = air ... 4 = bone) from CT numbers in HU."""
    classes = torch.zeros(ct_hu.shape, dtype=torch.int64, device=ct_hu.device)
    for edge in TISSUE_EDGES_HU:
        classes += (ct_hu >= edge).to(torch.int64)
    return classes


def _block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Two 3 x 3 convolutions with batch norm and ReLU (the first may stride): frozen, the norms are fixed affines."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TissueNet(nn.Module):
    """A small U-Net: CT [N, 1, H, W] in [-1, 1] -> logits [N, len(TISSUES), H, W]; `features` gives the encoder maps.

    Level k of the encoder works at 1 / 2**k of the input resolution with widths[k] channels; H and W must be
    multiples of `stride`. Batch norm rather than group norm: frozen, it is a fixed affine map, so the features of
    an image do not depend on the rest of the patch (a global offset of the sCT stays visible).
    """

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"TissueNet: need at least two positive widths, got {widths}")
        self.widths = widths
        self.encoder = nn.ModuleList(
            _block(1 if k == 0 else widths[k - 1], widths[k], 1 if k == 0 else 2) for k in range(len(widths))
        )
        self.decoder = nn.ModuleList(
            _block(widths[k + 1] + widths[k], widths[k], 1) for k in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], len(TISSUES), 1)

    @property
    def stride(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def features(self, ct: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        x = ct
        for block in self.encoder:
            x = block(x)
            maps.append(x)
        return maps

    def forward(self, ct: torch.Tensor) -> torch.Tensor:
        maps = self.features(ct)
        x = maps[-1]
        for block, skip in zip(self.decoder, reversed(maps[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return self.head(x)


def load_tissue_net(path: Path | str, device: torch.device | str = "cpu") -> tuple[TissueNet, dict[str, Any]]:
    """The frozen network of a checkpoint written by `train_tissue_net` (eval mode, no gradients), and its record."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(
            f"{path}: no anatomy network there; train one with `python -m training.anatomy --config ... --out {path}`"
        )
    record = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(record, dict) or "tissue_net" not in record:
        raise TrainingError(f"{path}: not an anatomy network checkpoint (python -m training.anatomy writes those)")
    if tuple(record["tissues"]) != TISSUES or tuple(record["edges_hu"]) != TISSUE_EDGES_HU:
        raise TrainingError(f"{path}: trained on other tissue classes ({record['tissues']}, {record['edges_hu']})")
    net = TissueNet(record["widths"])
    net.load_state_dict(record["tissue_net"])
    net.eval().to(device)
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net, record


class AnatomyLoss(nn.Module):
    """L1 between the frozen tissue network's features of sCT and CT inside the body, per level scaled, averaged.

    pred, target: [B, 1, H, W] on the [-1, 1] scale of `ct_window_hu` (H, W multiples of the network's stride);
    mask: [B, 1, H, W] body mask or None (every pixel). No gradient reaches the network; it does reach `pred`.
    """

    def __init__(
        self,
        checkpoint: Path | str,
        layers: Sequence[int] = (0, 1, 2, 3),
        device: torch.device | str = "cpu",
        ct_window_hu: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.net, record = load_tissue_net(checkpoint, device)
        if ct_window_hu is not None and [float(v) for v in ct_window_hu] != [float(v) for v in record["ct_window_hu"]]:
            raise TrainingError(
                f"{checkpoint}: the anatomy network reads CT over the HU window {record['ct_window_hu']}, "
                f"this model's is {list(ct_window_hu)}"
            )
        self.layers = tuple(sorted(set(int(k) for k in layers)))
        if not self.layers or min(self.layers) < 0 or max(self.layers) >= len(self.net.widths):
            raise TrainingError(
                f"loss.anatomy_layers {list(layers)} must index the network's {len(self.net.widths)} levels"
            )
        self.register_buffer("scale", torch.tensor(record["feature_scale"], dtype=torch.float32, device=device))

    def train(self, mode: bool = True) -> AnatomyLoss:
        """Always eval: frozen batch norms must not change with the trainer's mode."""
        return super().train(False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            real = self.net.features(target.float())
        fake = self.net.features(pred.float())
        weight = torch.ones_like(pred[:, :1], dtype=torch.float32) if mask is None else (mask > 0.5).float()
        total = pred.new_zeros((), dtype=torch.float32)
        for level in self.layers:
            body = F.avg_pool2d(weight, 2**level) if level else weight
            error = (fake[level] - real[level]).abs().mean(dim=1, keepdim=True)
            total = total + (error * body).sum() / body.sum().clamp_min(1.0) / self.scale[level]
        return total / len(self.layers)


# --------------------------------------------------------------------------------------------------- training


def _degrade(ct: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips, then in half the crops a Gaussian blur (sigma 0-1 px), then noise (0-60 HU): inputs only."""
    batch = ct.shape[0]
    flips = torch.rand(batch, 2, generator=generator)
    out = ct.clone()
    for index in range(batch):
        if flips[index, 0] < 0.5:
            out[index] = out[index].flip(-1)
        if flips[index, 1] < 0.5:
            out[index] = out[index].flip(-2)
    labels_source = out.clone()
    sigmas = torch.rand(batch, generator=generator) * (torch.rand(batch, generator=generator) < 0.5)
    for index, sigma in enumerate(sigmas.tolist()):
        if sigma > 0.05:
            radius = 3
            grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
            kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
            kernel = kernel / kernel.sum()
            image = out[index : index + 1]
            image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
            image = F.conv2d(F.pad(image, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
            out[index : index + 1] = image
    noise = torch.randn(out.shape, generator=generator) * (torch.rand(batch, 1, 1, 1, generator=generator) * 0.03)
    return out + noise, labels_source


def _class_weights(loader, window, batches: int = 8) -> torch.Tensor:
    """Inverse square root of each class's pixel share over a few seeded batches (rare bone and lung count more)."""
    counts = torch.ones(len(TISSUES), dtype=torch.float64)
    for index, batch in enumerate(loader):
        if index >= batches:
            break
        counts += torch.bincount(tissue_classes(_hu(batch["ct"], window)).flatten(), minlength=len(TISSUES)).double()
    weights = (counts / counts.sum()) ** -0.5
    return (weights / weights.mean()).float()


def _hu(ct: torch.Tensor, window) -> torch.Tensor:
    return torch.from_numpy(normalised_to_hu(ct.numpy().astype(np.float32, copy=True), tuple(window)))


@torch.no_grad()
def _scores(net: TissueNet, loader, window, batches: int) -> dict[str, float]:
    """Pixel accuracy and per-class intersection over union on clean crops."""
    net.eval()
    intersection = torch.zeros(len(TISSUES), dtype=torch.float64)
    union = torch.zeros(len(TISSUES), dtype=torch.float64)
    correct = total = 0
    for index, batch in enumerate(loader):
        if index >= batches:
            break
        truth = tissue_classes(_hu(batch["ct"], window))
        guess = net(batch["ct"]).argmax(dim=1, keepdim=True)
        correct += int((guess == truth).sum())
        total += truth.numel()
        for k in range(len(TISSUES)):
            intersection[k] += float(((guess == k) & (truth == k)).sum())
            union[k] += float(((guess == k) | (truth == k)).sum())
    scores = {"accuracy": correct / max(total, 1)}
    scores.update(
        {
            f"iou_{name.replace(' ', '_')}": float(i / u) if u else float("nan")
            for name, i, u in zip(TISSUES, intersection, union)
        }
    )
    return scores


@torch.no_grad()
def _feature_scale(net: TissueNet, loader, batches: int) -> list[float]:
    """Mean |feature| per level over the body pixels of clean training crops."""
    net.eval()
    sums = [0.0] * len(net.widths)
    weights = [0.0] * len(net.widths)
    for index, batch in enumerate(loader):
        if index >= batches:
            break
        body = (batch["mask"] > 0.5).float()
        for level, fmap in enumerate(net.features(batch["ct"])):
            pooled = F.avg_pool2d(body, 2**level) if level else body
            sums[level] += float((fmap.abs().mean(dim=1, keepdim=True) * pooled).sum())
            weights[level] += float(pooled.sum())
    return [s / max(w, 1.0) for s, w in zip(sums, weights)]


def train_tissue_net(
    train_volumes: list,
    val_volumes: list,
    window: Sequence[float],
    out: Path,
    steps: int = 1000,
    batch_size: int = 16,
    crop: int = 64,
    lr: float = 3e-3,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    seed: int = 0,
    command: str = "",
) -> dict[str, Any]:
    """Train the tissue network on CT crops of `train_volumes` (training.dataset.TrainingVolume) and save it to `out`."""
    from torch.utils.data import DataLoader

    from training.dataset import SliceCrops

    if not train_volumes:
        raise TrainingError("the anatomy network needs training volumes")
    torch.manual_seed(seed)
    net = TissueNet(widths)
    if crop % net.stride:
        raise TrainingError(f"--crop {crop} is not a multiple of the tissue network's stride {net.stride}")

    def loader(volumes, length, offset):
        crops = SliceCrops(volumes, 1, crop, length, 0.0, seed=seed + offset)
        return DataLoader(crops, batch_size=batch_size, shuffle=False, drop_last=True)

    training = loader(train_volumes, steps * batch_size, 0)
    weights = _class_weights(loader(train_volumes, 8 * batch_size, 1), window)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    net.train()
    for step, batch in enumerate(training, start=1):
        for group in optimiser.param_groups:  # half a cosine down to 5 %: the last steps settle
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * (step - 1) / steps)))
        degraded, clean = _degrade(batch["ct"], generator)
        labels = tissue_classes(_hu(clean, window))[:, 0]
        loss = F.cross_entropy(net(degraded), labels, weight=weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % 250 == 0 or step == steps:
            LOG.info("step %d: cross-entropy %.4f (%.1f s)", step, float(loss.detach()), time.perf_counter() - started)
    scores = _scores(net, loader(val_volumes or train_volumes, 16 * batch_size, 2), window, 16)
    record = {
        "tissue_net": net.state_dict(),
        "widths": list(net.widths),
        "tissues": list(TISSUES),
        "edges_hu": list(TISSUE_EDGES_HU),
        "ct_window_hu": [float(v) for v in window],
        "feature_scale": _feature_scale(net, loader(train_volumes, 16 * batch_size, 3), 16),
        "scores": {**scores, "on": "validation cases" if val_volumes else "training cases (no validation case)"},
        "class_weights": weights.tolist(),
        "training": {"steps": steps, "batch_size": batch_size, "crop": crop, "lr": lr, "seed": seed},
        "cases": sorted(v.case_id for v in train_volumes),
        "seconds": round(time.perf_counter() - started, 1),
        "command": command,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_suffix(".tmp")
    torch.save(record, temporary)
    temporary.replace(out)
    LOG.info("wrote %s: %s", out, json.dumps({k: round(v, 4) for k, v in scores.items()}))
    return record
