"""Frozen CT encoders and a memory bank of real-CT features for the feature-space drifting loss.

Why: the drifting paper computes its drift in the feature space of a frozen encoder (per-location vectors and
pooled statistics of several layers, each feature its own drift loss) with many positives from memory banks,
and reports that raw-pixel drift does not work for high-dimensional images. Here the candidates are

- "ldm": the latent-diffusion fallback's trained CT encoder (a MONAI AutoencoderKL encoder trained on the
  training split's CT), read from the shipped ONNX file itself, so no extra weights are needed; loading checks
  the torch copy against ONNX Runtime;
- "random": the same architecture with seeded random weights (what a feature space is worth without training);
- "anatomy": the frozen CT tissue network of the anatomy-aware loss (training/anatomy.py), trained on CT alone to
  tell air, lung, fat, soft tissue and bone apart: a feature space that knows anatomy, not only intensities.

The encoder never receives gradients (its parameters have requires_grad False and it stays in eval mode), but
gradients flow through it to the generated CT patches.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LOG = logging.getLogger(__name__)

ENCODERS = ("ldm", "random", "anatomy")
MAX_LOCATIONS = 16  # per-location features are average-pooled to at most 16 x 16 locations per layer
WINDOWS = (2, 4)  # mean and std over 2 x 2 and 4 x 4 windows of locations, as the paper's pooled features
PARITY_TOLERANCE = 1e-3


class FrozenEncoder(nn.Module):
    """Runs `blocks` in order and returns the outputs of the blocks listed in `taps` (a list of [N, C, h, w])."""

    def __init__(self, blocks: nn.ModuleList, taps: tuple[int, ...], name: str) -> None:
        super().__init__()
        if not taps or min(taps) < 0 or max(taps) >= len(blocks):
            raise ValueError(f"encoder {name}: layers {taps} must index its {len(blocks)} blocks")
        self.blocks = nn.ModuleList(list(blocks)[: max(taps) + 1])
        self.taps = tuple(sorted(set(taps)))
        self.name = name
        for param in self.parameters():
            param.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Always eval: a frozen encoder's normalisation must not change with the trainer's mode."""
        return super().train(False)

    def forward(self, patches: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        x = patches
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.taps:
                maps.append(x)
        return maps


def _ldm_autoencoder(channels: tuple[int, ...], latent_channels: int, res_blocks: int, groups: int) -> nn.Module:
    from monai.networks.nets import AutoencoderKL

    return AutoencoderKL(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        num_res_blocks=res_blocks,
        channels=tuple(channels),
        attention_levels=(False,) * len(channels),
        latent_channels=latent_channels,
        norm_num_groups=groups,
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    )


def _ldm_entry(manifest_path: Path) -> tuple[Path, dict]:
    manifest = json.loads(Path(manifest_path).read_text())
    entry = manifest["models"]["ldm"]
    return Path(manifest_path).parent / entry["files"]["ct_encoder"]["path"], entry["provenance"]["ldm"]


def _load_onnx_weights(encoder: nn.Module, onnx_path: Path) -> None:
    """Copy the ONNX file's weights into `encoder` (MONAI's AutoencoderKL encoder, as exported by training/ldm.py).

    Convolutions keep their names in the export; GroupNorm affine weights become anonymous Mul/Add constants, so
    they are taken in graph order, which is the forward order of the norms. The caller checks the result against
    ONNX Runtime, so a wrong mapping cannot pass silently.
    """
    model = _onnx_model(onnx_path)
    initializers = _initializers(model)
    affine: list[np.ndarray] = []
    for node in model.graph.node:
        if node.op_type in ("Mul", "Add"):
            for name in node.input:
                if name in initializers and name.startswith("onnx::"):
                    affine.append(initializers[name])
    state = encoder.state_dict()
    norm_keys = [key for key in state if ".norm" in key or key.startswith("blocks.6.")]
    loaded = {}
    for key in state:
        if key in norm_keys:
            continue
        onnx_name = f"autoencoder.vae.encoder.{key}"
        if onnx_name not in initializers:
            raise ValueError(f"{onnx_path}: no weight {onnx_name} in the ONNX file")
        loaded[key] = torch.from_numpy(initializers[onnx_name].copy()).reshape(state[key].shape)
    if len(affine) != len(norm_keys):
        raise ValueError(f"{onnx_path}: {len(affine)} affine constants for {len(norm_keys)} norm parameters")
    for key, value in zip(norm_keys, affine):
        loaded[key] = torch.from_numpy(value.copy()).reshape(state[key].shape)
    encoder.load_state_dict(loaded)


def _onnx_model(onnx_path: Path):
    import onnx

    return onnx.load(str(onnx_path))


def _initializers(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {item.name: numpy_helper.to_array(item) for item in model.graph.initializer}


def _load_named(module: nn.Module, onnx_path: Path, prefix: str) -> None:
    initializers = _initializers(_onnx_model(onnx_path))
    module.load_state_dict({key: torch.from_numpy(initializers[prefix + key].copy()) for key in module.state_dict()})


def _check_parity(vae: nn.Module, onnx_path: Path) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ct = torch.from_numpy(np.random.default_rng(0).uniform(-1, 0.5, (2, 1, 32, 32)).astype(np.float32))
    with torch.no_grad():
        reference = vae.encode(ct)[0].numpy()
    name = session.get_inputs()[0].name
    output = session.run(None, {name: ct.numpy()})[0]
    return float(np.abs(output - reference).max())


def build_encoder(
    kind: str, layers: tuple[int, ...], manifest_path: Path | str, seed: int = 0, anatomy_checkpoint: str = ""
) -> FrozenEncoder:
    """A frozen CT encoder of `kind` (see ENCODERS) returning the outputs of encoder blocks `layers`.

    "anatomy" is the CT tissue network of the anatomy loss (training/anatomy.py, read from `anatomy_checkpoint`):
    its four encoder levels (full to 1/8 resolution) are the blocks.
    """
    if kind not in ENCODERS:
        raise ValueError(f"drift encoder must be one of {ENCODERS}, got {kind!r}")
    if kind == "anatomy":
        from training.tissue_net import load_tissue_net

        net, record = load_tissue_net(anatomy_checkpoint)
        LOG.info("drift encoder: the anatomy network %s (%s)", anatomy_checkpoint, record.get("scores", {}))
        return FrozenEncoder(net.encoder, tuple(layers), kind)
    onnx_path, ldm = _ldm_entry(Path(manifest_path))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = _ldm_autoencoder(
            tuple(ldm["autoencoder_channels"]),
            ldm["latent_channels"],
            ldm["autoencoder_res_blocks"],
            ldm["norm_groups"],
        )
    if kind == "ldm":
        if not onnx_path.is_file():
            raise ValueError(f"{onnx_path}: the latent model's CT encoder is missing (needed by loss.encoder = 'ldm')")
        _load_onnx_weights(vae.encoder, onnx_path)
        _load_named(vae.quant_conv_mu, onnx_path, "autoencoder.vae.quant_conv_mu.")  # only for the parity check
        vae.eval()
        worst = _check_parity(vae, onnx_path)
        if not worst <= PARITY_TOLERANCE:
            raise ValueError(f"{onnx_path}: the torch copy of the CT encoder differs from ONNX by {worst:.3g}")
        LOG.info("drift encoder: the latent model's CT encoder from %s (max |torch - ONNX| %.2g)", onnx_path, worst)
    return FrozenEncoder(vae.encoder.blocks, tuple(layers), kind)


def feature_sets(maps: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per layer: per-location vectors, mean+std over 2x2 and 4x4 windows, and the global mean+std.

    Each value is [G, N, D]: G groups (locations or windows), each its own drift loss over the N samples.
    """
    sets: dict[str, torch.Tensor] = {}
    for index, fmap in enumerate(maps):
        fmap = fmap.float()
        if fmap.shape[-1] > MAX_LOCATIONS or fmap.shape[-2] > MAX_LOCATIONS:
            fmap = F.adaptive_avg_pool2d(fmap, (min(MAX_LOCATIONS, fmap.shape[-2]), min(MAX_LOCATIONS, fmap.shape[-1])))
        sets[f"layer{index}/location"] = fmap.flatten(2).permute(2, 0, 1)
        for window in WINDOWS:
            if min(fmap.shape[-2:]) < window:
                continue
            mean = F.avg_pool2d(fmap, window)
            std = (F.avg_pool2d(fmap * fmap, window) - mean * mean).clamp_min(1e-6).sqrt()
            sets[f"layer{index}/window{window}"] = torch.cat([mean, std], 1).flatten(2).permute(2, 0, 1)
        mean = fmap.mean(dim=(2, 3))
        std = (fmap.square().mean(dim=(2, 3)) - mean.square()).clamp_min(1e-6).sqrt()
        sets[f"layer{index}/global"] = torch.cat([mean, std], 1)[None]
    return sets


class FeatureBank:
    """A first-in-first-out memory of real-CT features, per feature name: [capacity, G, D] each.

    Positives drawn from it come from many earlier steps (the paper's memory banks), so each step sees far more
    real samples than it crops. Entries are detached; draws use the caller's seeded generator.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"feature bank capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.store: dict[str, torch.Tensor] = {}
        self.next = 0  # ring position of the next write
        self.size = 0

    def push(self, features: dict[str, torch.Tensor]) -> None:
        """Append samples: each value is [G, N, D] (the same N for every name); the oldest go first when full."""
        count = next(iter(features.values())).shape[1]
        positions = [(self.next + i) % self.capacity for i in range(count)][-self.capacity :]
        for name, value in features.items():
            value = value.detach().transpose(0, 1)[-self.capacity :]  # [N, G, D]
            if name not in self.store:
                self.store[name] = value.new_zeros((self.capacity, *value.shape[1:]))
            self.store[name][positions] = value
        self.next = (self.next + count) % self.capacity
        self.size = min(self.capacity, self.size + count)

    def sample(self, count: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """`count` stored samples (without replacement while the bank holds enough), as [G, count, D] per name."""
        if self.size == 0:
            raise ValueError("feature bank is empty")
        if count <= self.size:
            picks = torch.randperm(self.size, generator=generator)[:count]
        else:
            picks = torch.randint(self.size, (count,), generator=generator)
        return {name: value[picks].transpose(0, 1) for name, value in self.store.items()}
