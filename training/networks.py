"""The 2.5D conditional generator G(MR slice stack, noise) -> CT slice, its cost, and its ONNX export.

Contract (shared with `engine.generators.OnnxSliceGenerator`): input `mr` float32[B, C, H, W] with C = context
slices (the centre slice and its neighbours, normalised MR), input `noise` float32[B, Z, H, W] standard normal,
output `ct` float32[B, 1, H, W] in [-1, 1] (the manifest's HU window mapped linearly onto [-1, 1]). H and W must
be divisible by 2**depth.

Design choices (see training/README.md for the reasoning in one place):
- Noise placement. The per-pixel Gaussian noise is concatenated to the MR stack at full resolution (the original design's
  choice: every pixel gets its own randomness, which is what fine texture at the 64 x 64 patch scale of the
  drift loss needs), and, by default, the same noise average-pooled down to the bottleneck (rescaled by
  2**depth so it is unit-variance again) is concatenated to the bottleneck features as a low-frequency random
  code that can move larger structures. Deriving the bottleneck code from the one full-resolution input keeps
  the engine's single `noise` input and its per-slice seeds unchanged, and costs next to nothing.
- Output: tanh, not a clamp. Both keep the output inside the window that the engine contract promises, but a
  clamp has zero gradient once a pixel is outside [-1, 1], so a pixel that overshoots can never be pulled back by
  L1 or by the drift; tanh has a gradient everywhere. The values we need are not deep in saturation: air
  (-1000 HU in the default window [-1024, 3071]) is -0.988, pre-activation -2.6.
- CPU cost. Plain 3x3 conv + norm + ReLU blocks, strided-conv downsampling, 2x2 transposed-conv upsampling,
  skip connections by concatenation, no attention, channels growing slower than doubling: about 4.9 GMAC
  (9.9 GFLOP) per 400 x 400 slice with the defaults (width 16, depth 4); `conv_macs` counts them. GroupNorm is
  the default (independent of the batch composition, which is a handful of slices per step); it exports as
  InstanceNormalization + reshapes, which ONNX Runtime does not fuse, so `norm="batch"` (folded into the convs)
  is the faster option for the CPU path. Timings: training/README.md.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

LOG = logging.getLogger(__name__)

ONNX_OPSET = 18  # every exported network (the generator and the latent model's three)
#: Largest |ONNX Runtime - PyTorch| an export may show, in the networks' own [-1, 1]-scaled units (x 2047.5 for HU).
PARITY_TOLERANCE = 1e-3


NORMS = ("group", "batch", "none")


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    """GroupNorm (largest group count <= `groups` dividing `channels`), BatchNorm, or nothing."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    count = max(1, min(groups, channels))
    while channels % count:
        count -= 1
    return nn.GroupNorm(count, channels)


class ConvBlock(nn.Module):
    """`convs` x (3x3 conv -> GroupNorm -> ReLU); the first conv may change the channel count or stride."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        convs: int = 2,
        stride: int = 1,
        groups: int = 8,
        norm: str = "group",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(convs):
            layers += [
                nn.Conv2d(
                    in_channels if index == 0 else out_channels,
                    out_channels,
                    kernel_size=3,
                    stride=stride if index == 0 else 1,
                    padding=1,
                    bias=norm == "none",
                ),
                _norm(norm, out_channels, groups),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DriftingUNet(nn.Module):
    """A small 2.5D UNet: G(mr[B, C, H, W], noise[B, Z, H, W]) -> ct[B, 1, H, W] in [-1, 1].

    Args:
        context_slices: C, the number of MR slices in the input stack (odd; the centre one is predicted).
        noise_channels: Z, channels of per-pixel standard normal noise (0: a deterministic network).
        width: channels at full resolution.
        depth: number of 2x downsamplings; H and W must be divisible by 2**depth.
        channel_mult: channels at level i are width * channel_mult[i] (len depth + 1). None means
            min(i + 1, 4), i.e. (1, 2, 3, 4, 4) at depth 4: slower growth than doubling, because with doubling
            every level costs as much as the full-resolution one, and the receptive field comes from depth.
        convs_per_block: 3x3 convs per encoder/decoder block.
        groups: GroupNorm groups (reduced where it does not divide the channel count).
        norm: "group" (default: independent of the batch, robust with a few slices per step), "batch" (folded
            into the convolutions by ONNX Runtime, so free at inference: ~35% faster on the CPU than "group",
            which exports as InstanceNormalization + reshapes), or "none".
        bottleneck_noise: also feed the noise, average-pooled to the bottleneck, into the bottleneck block.
        output_init: the untrained network's output on the [-1, 1] scale: the 1x1 head starts with zero weights
            and its bias at atanh(output_init), so training starts from a constant image (the water baseline with
            the default -0.5, which is 0 HU in the default window [-1024, 3071]; pass the window's value of 0 HU
            for another window) instead of a random one with a random mean, and the first steps are not spent
            moving the mean. Gradients reach the head's weights at once and the rest from the second step on.
    """

    def __init__(
        self,
        context_slices: int = 5,
        noise_channels: int = 1,
        width: int = 16,
        depth: int = 4,
        channel_mult: Sequence[int] | None = None,
        convs_per_block: int = 2,
        groups: int = 8,
        norm: str = "group",
        bottleneck_noise: bool = True,
        output_init: float = -0.5,
    ) -> None:
        super().__init__()
        if context_slices < 1 or noise_channels < 0 or width < 1 or depth < 1 or convs_per_block < 1:
            raise ValueError(
                f"DriftingUNet: need context_slices >= 1, noise_channels >= 0, width >= 1, depth >= 1, "
                f"convs_per_block >= 1; got {context_slices}, {noise_channels}, {width}, {depth}, {convs_per_block}"
            )
        if not -1.0 < output_init < 1.0:
            raise ValueError(f"DriftingUNet: output_init must be inside (-1, 1), got {output_init}")
        if norm not in NORMS:
            raise ValueError(f"DriftingUNet: norm must be one of {NORMS}, got {norm!r}")
        mult = list(channel_mult) if channel_mult is not None else [min(level + 1, 4) for level in range(depth + 1)]
        if len(mult) != depth + 1 or min(mult) < 1:
            raise ValueError(f"DriftingUNet: channel_mult needs {depth + 1} positive entries, got {mult}")
        self.context_slices = context_slices
        self.noise_channels = noise_channels
        self.depth = depth
        self.bottleneck_noise = bool(bottleneck_noise and noise_channels > 0)
        self.config = {
            "context_slices": context_slices,
            "noise_channels": noise_channels,
            "width": width,
            "depth": depth,
            "channel_mult": mult,
            "convs_per_block": convs_per_block,
            "groups": groups,
            "norm": norm,
            "bottleneck_noise": bool(bottleneck_noise),
            "output_init": float(output_init),
        }
        channels = [width * m for m in mult]

        self.stem = ConvBlock(context_slices + noise_channels, channels[0], convs_per_block, groups=groups, norm=norm)
        self.down = nn.ModuleList(
            ConvBlock(channels[level], channels[level + 1], convs_per_block, stride=2, groups=groups, norm=norm)
            for level in range(depth)
        )
        extra = noise_channels if self.bottleneck_noise else 0
        self.bottom = ConvBlock(channels[depth] + extra, channels[depth], 1, groups=groups, norm=norm)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels[level + 1], channels[level], kernel_size=2, stride=2, bias=False)
            for level in reversed(range(depth))
        )
        self.dec = nn.ModuleList(
            ConvBlock(2 * channels[level], channels[level], convs_per_block, groups=groups, norm=norm)
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(channels[0], 1, kernel_size=1)
        with torch.no_grad():  # start as a constant image at output_init (see the docstring)
            self.head.weight.zero_()
            self.head.bias.fill_(math.atanh(output_init))

    @property
    def stride(self) -> int:
        """H and W must be multiples of this."""
        return 2**self.depth

    def forward(self, mr: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
            check_input_size(self, mr.shape[-2], mr.shape[-1])
            if mr.shape[1] != self.context_slices:
                raise ValueError(f"DriftingUNet: expected {self.context_slices} MR slices, got {mr.shape[1]}")
        if self.noise_channels:
            if noise is None:
                raise ValueError(f"DriftingUNet: this network needs a noise input with {self.noise_channels} channels")
            x = torch.cat([mr, noise], dim=1)
        else:
            x = mr
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        h = skips.pop()
        if self.bottleneck_noise:
            assert noise is not None
            # Average pooling shrinks the std of iid noise by the pooling factor; multiply it back to unit variance.
            code = F.avg_pool2d(noise, kernel_size=self.stride, stride=self.stride) * float(self.stride)
            h = torch.cat([h, code], dim=1)
        h = self.bottom(h)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            h = dec(torch.cat([up(h), skip], dim=1))
        return torch.tanh(self.head(h))


def build_generator(config: dict) -> DriftingUNet:
    """Build the network from a plain dict (a checkpoint's or config file's `model` block)."""
    return DriftingUNet(**config)


def check_input_size(model: DriftingUNet, height: int, width: int) -> None:
    """Raise a one-line ValueError unless H and W are positive multiples of the network's stride."""
    if height <= 0 or width <= 0 or height % model.stride or width % model.stride:
        raise ValueError(f"DriftingUNet: H and W must be positive multiples of {model.stride}, got {height} x {width}")


def conv_macs(model: nn.Module, context_slices: int, noise_channels: int, height: int, width: int) -> int:
    """Multiply-accumulates of all (transposed) convolutions for one slice of H x W, counted analytically.

    One forward pass of a batch of one on zeros records each layer's real input/output shapes through hooks;
    MACs are then output elements x (in_channels / groups) x kernel area (transposed conv: input elements x
    (out_channels / groups) x kernel area). Norms, activations and pooling are not counted (a few % at most).
    FLOPs are about 2 x MACs.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def deconv_hook(module: nn.ConvTranspose2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += inputs[0].numel() * (module.out_channels // module.groups) * kh * kw

    handles = []
    for module in model.modules():
        if isinstance(module, nn.ConvTranspose2d):
            handles.append(module.register_forward_hook(deconv_hook))
        elif isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            mr = torch.zeros(1, context_slices, height, width)
            noise = torch.zeros(1, noise_channels, height, width) if noise_channels else None
            model(mr, noise)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return int(total)


def flops_per_slice(model: DriftingUNet, height: int, width: int) -> int:
    """About 2 x conv MACs: the FLOPs of one H x W slice."""
    return 2 * conv_macs(model, model.context_slices, model.noise_channels, height, width)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    context_slices: int,
    noise_channels: int,
    example_size: tuple[int, int] = (64, 64),
    opset: int = ONNX_OPSET,
) -> Path:
    """Write the model as ONNX: inputs "mr" [B, C, H, W] and "noise" [B, Z, H, W], output "ct" [B, 1, H, W].

    Batch, H and W are dynamic axes. Uses the TorchScript-based exporter (`dynamo=False`): with torch 2.13 the
    torch.export-based one (`dynamo=True`, via onnxscript) also works with dynamic shapes and gives the same
    graph and the same agreement with PyTorch, but takes ~17 s instead of ~1 s and logs pages of warnings. The model is exported in eval mode on the CPU; the caller's mode and device are restored.
    A network with noise_channels == 0 gets only the "mr" input (the engine then sends no noise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = example_size
    was_training = model.training
    device = next(model.parameters()).device
    model.eval().cpu()
    mr = torch.zeros(1, context_slices, height, width)
    names = ["mr"]
    args: tuple[torch.Tensor, ...] = (mr,)
    axes = {"mr": {0: "batch", 2: "height", 3: "width"}, "ct": {0: "batch", 2: "height", 3: "width"}}
    if noise_channels:
        args = (mr, torch.zeros(1, noise_channels, height, width))
        names.append("noise")
        axes["noise"] = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings():
            # The legacy exporter announces its own deprecation and warns about shape checks it records as
            # constants (the batch-size check inside the norms); neither changes the exported graph.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=names,
                output_names=["ct"],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
    finally:
        model.to(device).train(was_training)
    LOG.info("exported %s (opset %d, inputs %s)", path, opset, names)
    return path


def benchmark_onnx(model: DriftingUNet, height: int, width: int, batch: int, threads: int, repeats: int) -> float:
    """Best-of-`repeats` seconds per slice of the exported model on ONNX Runtime's CPU provider."""
    import tempfile
    import time

    import numpy as np
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(model, Path(folder) / "generator.onnx", model.context_slices, model.noise_channels)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"mr": rng.standard_normal((batch, model.context_slices, height, width), dtype=np.float32)}
    if model.noise_channels:
        feeds["noise"] = rng.standard_normal((batch, model.noise_channels, height, width), dtype=np.float32)
    session.run(None, feeds)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - start)
    return best / batch


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m training.networks",
        description="Cost of the generator: parameters, conv FLOPs per slice, and ONNX Runtime CPU seconds per slice "
        "(untrained weights; the cost does not depend on them).",
    )
    parser.add_argument("--size", type=int, nargs=2, default=(400, 400), metavar=("H", "W"), help="slice size")
    parser.add_argument("--context-slices", type=int, default=5)
    parser.add_argument("--noise-channels", type=int, default=1)
    parser.add_argument("--width", type=int, default=16, help="base channels")
    parser.add_argument("--depth", type=int, default=4, help="number of 2x downsamplings")
    parser.add_argument("--channel-mult", type=int, nargs="+", default=None, help="per level (depth + 1 values)")
    parser.add_argument("--convs-per-block", type=int, default=2)
    parser.add_argument("--norm", choices=NORMS, nargs="+", default=["group", "batch"], help="norms to compare")
    parser.add_argument("--batch", type=int, default=4, help="slices per ONNX call")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the best is reported")
    parser.add_argument("--slices", type=int, default=100, help="slices of the case to extrapolate to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    height, width = args.size
    for norm in args.norm:
        torch.manual_seed(0)
        model = DriftingUNet(
            context_slices=args.context_slices,
            noise_channels=args.noise_channels,
            width=args.width,
            depth=args.depth,
            channel_mult=args.channel_mult,
            convs_per_block=args.convs_per_block,
            norm=norm,
        )
        try:
            check_input_size(model, height, width)
        except ValueError as err:
            parser.error(str(err))
        seconds = benchmark_onnx(model, height, width, args.batch, args.threads, args.repeats)
        parameters = sum(p.numel() for p in model.parameters())
        print(
            f"norm={norm} width={args.width} depth={args.depth} mult={model.config['channel_mult']} "
            f"params={parameters} GFLOP/slice={flops_per_slice(model, height, width) / 1e9:.2f} "
            f"size={height}x{width} threads={args.threads} s/slice={seconds:.4f} "
            f"s/{args.slices} slices={seconds * args.slices:.1f}"
        )


if __name__ == "__main__":
    main()
