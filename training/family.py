"""The generator family: one 2.5D slice contract, several networks, named presets S, M and L.

Every member maps `mr` [B, C, H, W] (C context slices) and, when it has noise channels, `noise` [B, Z, H, W] to
`ct` [B, 1, H, W] in [-1, 1], the contract of `engine.generators.OnnxSliceGenerator`; every member exports through
`training.networks.export_onnx`, so the engine runs any of them unchanged. What differs is the stride (H and W must
be multiples of it; the manifest's `divisible_by` must be too, which the trainer checks before it loads data).

- `unet`: `training.networks.DriftingUNet`, the small plain U-Net every shipped model uses (preset S).
- `flexible_unet`: MONAI's `FlexibleUNet` with a 2-D ResNet encoder (ResNet-10 for M, ResNet-34 for L, the encoder
  of the 3rd-place SynthRAD2025 Task 1 entry), built with random weights (nothing is downloaded). MONAI's
  registered ResNet-18/34 encoders use the MedicalNet "type A" shortcut, which pads the identity with zeros made
  from the input's shape (an ONNX graph with the batch size baked in) and passes it through `.data` (no gradient
  on those shortcuts); this module builds the same encoder with the usual projection ("type B") shortcut instead.
  Batch norm throughout (MONAI's default): at inference it folds into the convolutions and, unlike GroupNorm,
  does not depend on the field of view (README: padding slices with air moved the GroupNorm network's MAE).

The output is tanh of a 3 x 3 head that starts at zero weights and bias atanh(output_init), so like the U-Net an
untrained member outputs a constant image (water by default) rather than a random one. Noise, when used, is
concatenated to the MR stack as extra input channels.

FLOPs are counted by running the network once under `torch.utils.flop_counter.FlopCounterMode`: convolutions and
matrix products, one multiply-add counting 2 FLOPs; norms, activations, pooling, additions and resizing are not
counted (a few % at most).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

ARCHES = ("unet", "flexible_unet")
#: ResNet encoders offered for `flexible_unet` (basic blocks: the family's sizes M and L and one between).
RESNET_LAYERS = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}

#: Named presets: values of the config's [model] section (config keys given explicitly win over a preset's).
PRESETS: dict[str, dict[str, Any]] = {
    "S": {"arch": "unet", "width": 16, "depth": 4, "channel_mult": [1, 2, 3, 4, 4]},
    "M": {"arch": "flexible_unet", "backbone": "resnet10", "decoder_channels": [256, 128, 64, 32, 16]},
    "L": {"arch": "flexible_unet", "backbone": "resnet34", "decoder_channels": [256, 128, 64, 32, 16]},
}


class ResNetUNet(nn.Module):
    """MONAI's FlexibleUNet with a 2-D ResNet encoder (projection shortcuts) as a 2.5D slice generator.

    Args:
        context_slices: C, MR slices in the input stack (odd; the centre one is predicted).
        noise_channels: Z, standard normal noise channels concatenated to the stack (0: deterministic, `mr` only).
        backbone: one of RESNET_LAYERS.
        decoder_channels: the five decoder levels' channels, coarse to fine.
        output_init: the untrained network's constant output on the [-1, 1] scale (0 HU of the window by default).
    """

    stride = 32  # five 2x downsamplings (the stem's stride-2 conv, its max pool, three strided stages)

    def __init__(
        self,
        context_slices: int = 5,
        noise_channels: int = 1,
        backbone: str = "resnet34",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        output_init: float = -0.5,
    ) -> None:
        super().__init__()
        from monai.networks.nets import FlexibleUNet

        if context_slices < 1 or noise_channels < 0:
            raise ValueError(
                f"ResNetUNet: need context_slices >= 1 and noise_channels >= 0, got {context_slices}, {noise_channels}"
            )
        if backbone not in RESNET_LAYERS:
            raise ValueError(f"ResNetUNet: backbone must be one of {sorted(RESNET_LAYERS)}, got {backbone!r}")
        decoder = [int(c) for c in decoder_channels]
        if len(decoder) != 5 or min(decoder) < 1:
            raise ValueError(f"ResNetUNet: decoder_channels needs 5 positive entries, got {list(decoder_channels)}")
        if not -1.0 < output_init < 1.0:
            raise ValueError(f"ResNetUNet: output_init must be inside (-1, 1), got {output_init}")
        self.context_slices = context_slices
        self.noise_channels = noise_channels
        self.config = {
            "context_slices": context_slices,
            "noise_channels": noise_channels,
            "backbone": backbone,
            "decoder_channels": decoder,
            "output_init": float(output_init),
        }
        inputs = context_slices + noise_channels
        # MONAI builds its registered encoder first; it is replaced at once (a few ms of wasted random init).
        self.net = FlexibleUNet(
            inputs, 1, backbone, pretrained=False, decoder_channels=tuple(decoder), spatial_dims=2, is_pad=False
        )
        self.net.encoder = _resnet_encoder(RESNET_LAYERS[backbone], inputs)
        head = self.net.segmentation_head[0]
        with torch.no_grad():  # start as a constant image at output_init (see the module docstring)
            head.weight.zero_()
            head.bias.fill_(math.atanh(output_init))

    def forward(self, mr: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
            check_size(self, mr.shape[-2], mr.shape[-1])
            if mr.shape[1] != self.context_slices:
                raise ValueError(f"ResNetUNet: expected {self.context_slices} MR slices, got {mr.shape[1]}")
        if self.noise_channels:
            if noise is None:
                raise ValueError(f"ResNetUNet: this network needs a noise input with {self.noise_channels} channels")
            mr = torch.cat([mr, noise], dim=1)
        return torch.tanh(self.net(mr))


def _resnet_encoder(layers: Sequence[int], in_channels: int) -> nn.Module:
    """MONAI's ResNet feature extractor (five maps, strides 2 to 32) with projection shortcuts, in 2-D."""
    from monai.networks.nets.resnet import ResNet, ResNetFeatures, get_inplanes

    class ProjectionResNetFeatures(ResNetFeatures):
        def __init__(self) -> None:  # ResNetFeatures' forward (the five maps), ResNet's constructor with type B
            ResNet.__init__(
                self,
                block="basic",
                layers=list(layers),
                block_inplanes=get_inplanes(),
                spatial_dims=2,
                n_input_channels=in_channels,
                conv1_t_stride=2,
                shortcut_type="B",
                feed_forward=False,
                bias_downsample=False,
            )

    return ProjectionResNetFeatures()


def check_size(model: nn.Module, height: int, width: int) -> None:
    """Raise a one-line ValueError unless H and W are positive multiples of the network's stride."""
    stride = model.stride
    if height <= 0 or width <= 0 or height % stride or width % stride:
        raise ValueError(
            f"{type(model).__name__}: H and W must be positive multiples of {stride}, got {height} x {width}"
        )


def resolve_preset(model: Mapping[str, Any], where: str = "model") -> dict[str, Any]:
    """A [model] section with its preset's values filled in under the keys it states itself."""
    values = dict(model)
    preset = values.get("preset", "")
    if not preset:
        return values
    if preset not in PRESETS:
        raise ValueError(f"{where}: preset must be one of {sorted(PRESETS)}, got {preset!r}")
    return {**PRESETS[preset], **values}


def build_generator(model: Any, context_slices: int, output_init: float = -0.5) -> nn.Module:
    """The generator of a config's [model] section (a ModelConfig or its dict) for `context_slices` MR slices."""
    get = model.get if isinstance(model, Mapping) else lambda key, default=None: getattr(model, key, default)
    arch = get("arch", "unet") or "unet"
    noise = int(get("noise_channels", 1))
    if arch == "unet":
        from training.networks import DriftingUNet

        return DriftingUNet(
            context_slices=context_slices,
            noise_channels=noise,
            width=int(get("width", 16)),
            depth=int(get("depth", 4)),
            channel_mult=list(get("channel_mult", ())) or None,
            output_init=output_init,
        )
    if arch == "flexible_unet":
        return ResNetUNet(
            context_slices=context_slices,
            noise_channels=noise,
            backbone=get("backbone", "resnet34"),
            decoder_channels=tuple(get("decoder_channels", (256, 128, 64, 32, 16))),
            output_init=output_init,
        )
    raise ValueError(f"model.arch must be one of {ARCHES}, got {arch!r}")


def network_stride(model: Any) -> int:
    """What H and W (and so the manifest's divisible_by and the training crop) must be multiples of."""
    get = model.get if isinstance(model, Mapping) else lambda key, default=None: getattr(model, key, default)
    arch = get("arch", "unet") or "unet"
    if arch == "unet":
        return 2 ** int(get("depth", 4))
    if arch == "flexible_unet":
        return ResNetUNet.stride
    raise ValueError(f"model.arch must be one of {ARCHES}, got {arch!r}")


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def flops_per_slice(model: nn.Module, height: int = 512, width: int = 512) -> int:
    """FLOPs of one forward pass on one H x W slice with its context (and noise): 2 per multiply-add."""
    from torch.utils.flop_counter import FlopCounterMode

    channels = model.context_slices
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        mr = torch.zeros(1, channels, height, width, device=device)
        noise = torch.zeros(1, model.noise_channels, height, width, device=device) if model.noise_channels else None
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(mr, noise)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
