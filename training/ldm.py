"""The latent-diffusion fallback as two model kinds of the one trainer (training/train.py), and its export.

Stage 1, `model.kind = "ldm_autoencoder"`: a 2-D MONAI `AutoencoderKL` for CT slices (L1 + a small KL term).
Validation scores the reconstruction of whole held-out CT volumes in HU: the bound on the fallback's accuracy.

Stage 2, `model.kind = "ldm_denoiser"`: the frozen autoencoder of stage 1 (`ldm.autoencoder` names its
checkpoint) plus an MR condition encoder and a MONAI `DiffusionModelUNet` trained with the DDPM objective on
scaled latents. The condition is the MR stack brought to latent size, concatenated with the noisy latent:
`condition = "pool"` averages each block of f x f pixels, `"learned"` adds a small strided-conv encoding to
that. The noise schedule is `engine.ldm_sampler.alphas_cumprod` (NumPy), the one the sampler uses; validation samples
with `engine.ldm_sampler.ddim_sample` itself, so the trainer scores exactly what the container will run.

Stage 2's checkpoint holds all three parts; `python -m training.export` writes them as the ONNX files of a
manifest entry of kind "latent_diffusion" (contracts in engine/ldm_sampler.py).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engine.generators import slice_noise
from engine.ldm_sampler import (
    BETA_END,
    BETA_START,
    DEFAULT_DDIM_STEPS,
    DEFAULT_TRAIN_TIMESTEPS,
    PREDICTIONS,
    alphas_cumprod,
    ddim_sample,
    ddim_timesteps,
)
from engine.manifest import ModelSpec, sha256_of
from pipeline.run import slice_seeds
from preprocessing.slices import iter_slice_batches
from training.errors import TrainingError
from training.networks import ONNX_OPSET, PARITY_TOLERANCE

LOG = logging.getLogger(__name__)

LDM_KINDS = ("ldm_autoencoder", "ldm_denoiser")
CONDITIONS = ("pool", "learned")


@dataclass(frozen=True)
class LdmConfig:
    """The `[ldm]` section of a training config (the `[model]` section's width/depth are not used by these kinds).

    autoencoder_channels: channels per AutoencoderKL level; the latent is 2^(levels - 1) times smaller.
    latent_channels, autoencoder_res_blocks, kl_weight: the autoencoder and the weight of its KL term.
    adversarial_weight: weight of a least-squares adversarial term from a MONAI PatchDiscriminator on the
        reconstruction (0: none). The discriminator trains in the same step on real vs detached reconstructions;
        it is part of the stage-1 checkpoint only (the denoiser stage and the export drop it). Single process only.
    autoencoder: (denoiser stage) the checkpoint of the autoencoder run; its EMA weights are loaded and frozen.
    unet_channels, unet_res_blocks: the DiffusionModelUNet (no attention but MONAI's fixed middle block).
    condition: "pool" (the MR stack averaged to latent size) or "learned" (pool + a strided-conv encoding).
    condition_channels: channels of the learned encoding.
    prediction: what the denoiser predicts, "eps" (the noise) or "v" (velocity, a * eps - s * x0).
    val_ddim_steps: DDIM steps used by validation (the shipped count is settings.sampler.ddim_steps).
    norm_groups: GroupNorm groups of both networks.
    """

    autoencoder_channels: tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 4
    autoencoder_res_blocks: int = 1
    kl_weight: float = 1e-6
    adversarial_weight: float = 0.0
    autoencoder: str = ""
    unet_channels: tuple[int, ...] = (16, 32, 64)  # the shipped fallback's (configs/ldm_denoiser.toml)
    unet_res_blocks: int = 1
    condition: str = "learned"  # measured better than "pool" (training/LDM.md)
    condition_channels: int = 16
    prediction: str = "v"
    val_ddim_steps: int = 10
    norm_groups: int = 8

    def __post_init__(self) -> None:
        if len(self.autoencoder_channels) < 2 or len(self.unet_channels) < 2:
            raise ValueError("ldm: autoencoder_channels and unet_channels need at least two levels")
        if any(c % self.norm_groups for c in (*self.autoencoder_channels, *self.unet_channels)):
            raise ValueError(f"ldm: every channel count must be a multiple of norm_groups={self.norm_groups}")
        if self.condition not in CONDITIONS:
            raise ValueError(f"ldm: condition must be one of {CONDITIONS}, got {self.condition!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"ldm: prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.latent_channels < 1 or self.val_ddim_steps < 1 or self.kl_weight < 0 or self.adversarial_weight < 0:
            raise ValueError(
                "ldm: latent_channels and val_ddim_steps must be >= 1, kl_weight and adversarial_weight >= 0"
            )

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.autoencoder_channels) - 1)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LdmConfig:
        """Build from the config's `[ldm]` table; unknown keys are an error."""
        known = {item.name: item for item in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"ldm: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def ldm_config(config) -> LdmConfig:
    """The LdmConfig of a TrainConfig."""
    return LdmConfig.from_dict(dict(getattr(config, "ldm", {}) or {}))


def train_timesteps_of(spec: ModelSpec) -> int:
    return int(spec.sampler.get("train_timesteps", DEFAULT_TRAIN_TIMESTEPS))


# --- networks ---------------------------------------------------------------------------------------------------


class SliceAutoencoder(nn.Module):
    """MONAI AutoencoderKL on one CT slice in [-1, 1] (no attention blocks: cheap on the CPU, exports cleanly)."""

    def __init__(self, cfg: LdmConfig) -> None:
        super().__init__()
        from monai.networks.nets import AutoencoderKL

        self.downsampling = cfg.downsampling
        self.latent_channels = cfg.latent_channels
        self.vae = AutoencoderKL(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            num_res_blocks=cfg.autoencoder_res_blocks,
            channels=tuple(cfg.autoencoder_channels),
            attention_levels=(False,) * len(cfg.autoencoder_channels),
            latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.norm_groups,
            with_encoder_nonlocal_attn=False,
            with_decoder_nonlocal_attn=False,
        )
        if cfg.adversarial_weight > 0:  # a patch critic for the adversarial term (training only, never exported)
            from monai.networks.nets import PatchDiscriminator

            self.discriminator = PatchDiscriminator(
                spatial_dims=2, channels=cfg.autoencoder_channels[0], in_channels=1, num_layers_d=3, norm="INSTANCE"
            )

    def forward(self, ct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction (from a sampled latent), latent mean and latent standard deviation."""
        return self.vae(ct)

    def encode_mean(self, ct: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(ct)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)


class ConditionEncoder(nn.Module):
    """The MR stack at latent size: f x f average pooling, plus (learned) a strided-conv encoding beside it."""

    def __init__(self, context_slices: int, factor: int, mode: str, channels: int, groups: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(factor)
        self.learned = None
        self.out_channels = context_slices
        if mode == "learned":
            layers: list[nn.Module] = [nn.Conv2d(context_slices, channels, 3, padding=1), nn.SiLU()]
            for _ in range(int(math.log2(factor))):
                layers += [
                    nn.Conv2d(channels, channels, 3, stride=2, padding=1),
                    nn.GroupNorm(groups, channels),
                    nn.SiLU(),
                ]
            layers.append(nn.Conv2d(channels, channels, 3, padding=1))
            self.learned = nn.Sequential(*layers)
            self.out_channels += channels

    def forward(self, mr: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(mr)
        return pooled if self.learned is None else torch.cat([pooled, self.learned(mr)], dim=1)


class LatentDiffusion(nn.Module):
    """Stage 2: frozen autoencoder + condition encoder + denoiser; `forward` is one DDPM training draw.

    Buffers travel with the checkpoint (and the EMA copy): `alpha_bars` (engine.ldm_sampler's schedule) and
    `latent_scale` (1 / std of the first training batch's latents, the usual LDM choice; 0 until then).
    """

    def __init__(self, autoencoder: SliceAutoencoder, cfg: LdmConfig, context_slices: int, train_timesteps: int):
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet

        self.autoencoder = autoencoder
        for param in self.autoencoder.parameters():
            param.requires_grad_(False)
        self.prediction = cfg.prediction
        self.latent_channels = cfg.latent_channels
        self.condition = ConditionEncoder(
            context_slices, cfg.downsampling, cfg.condition, cfg.condition_channels, cfg.norm_groups
        )
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=cfg.latent_channels + self.condition.out_channels,
            out_channels=cfg.latent_channels,
            num_res_blocks=cfg.unet_res_blocks,
            channels=tuple(cfg.unet_channels),
            attention_levels=(False,) * len(cfg.unet_channels),
            norm_num_groups=cfg.norm_groups,
            num_head_channels=cfg.unet_channels[-1],
        )
        self.register_buffer("alpha_bars", torch.tensor(alphas_cumprod(train_timesteps), dtype=torch.float32))
        self.register_buffer("latent_scale", torch.zeros((), dtype=torch.float32))

    @property
    def train_timesteps(self) -> int:
        return int(self.alpha_bars.shape[0])

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([x, cond], dim=1), t)

    def forward(self, mr: torch.Tensor, ct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(network output, its target) for a random timestep per sample: the DDPM objective's pair."""
        with torch.no_grad():
            z = self.autoencoder.encode_mean(ct).float()
            if self.training and float(self.latent_scale) == 0.0:
                self.latent_scale.fill_(1.0 / max(float(z.std()), 1e-6))
                LOG.info("latent scale set to %.4f from the first batch", float(self.latent_scale))
            z = z * self.latent_scale
        t = torch.randint(0, self.train_timesteps, (z.shape[0],), device=z.device)
        noise = torch.randn_like(z)
        a = self.alpha_bars[t].sqrt().view(-1, 1, 1, 1)
        s = (1.0 - self.alpha_bars[t]).sqrt().view(-1, 1, 1, 1)
        x_t = a * z + s * noise
        target = noise if self.prediction == "eps" else a * noise - s * z
        return self.denoise(x_t, t, self.condition(mr)), target


def build_ldm_network(config, spec: ModelSpec, load_autoencoder: bool = True) -> nn.Module:
    """The network of an ldm_* kind; the denoiser stage loads (and freezes) its autoencoder's EMA weights."""
    cfg = ldm_config(config)
    autoencoder = SliceAutoencoder(cfg)
    if config.model.kind == "ldm_autoencoder":
        return autoencoder
    if config.model.kind != "ldm_denoiser":
        raise ValueError(f"model.kind {config.model.kind!r} is not one of {LDM_KINDS}")
    if load_autoencoder:
        path = Path(cfg.autoencoder)
        if not cfg.autoencoder or not path.is_file():
            raise TrainingError(
                f"ldm.autoencoder = {cfg.autoencoder!r}: no autoencoder checkpoint there "
                "(train the ldm_autoencoder stage first)"
            )
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        if checkpoint["config"]["model"]["kind"] != "ldm_autoencoder":
            raise TrainingError(f"{path}: not an ldm_autoencoder checkpoint")
        trained = LdmConfig.from_dict(checkpoint["config"].get("ldm", {}))
        if (trained.autoencoder_channels, trained.latent_channels, trained.autoencoder_res_blocks) != (
            cfg.autoencoder_channels,
            cfg.latent_channels,
            cfg.autoencoder_res_blocks,
        ):
            raise TrainingError(f"{path}: autoencoder shape differs from this config's [ldm] autoencoder settings")
        if checkpoint["settings"] != spec.settings() | {"sampler": checkpoint["settings"]["sampler"]}:
            raise TrainingError(f"{path}: autoencoder was trained with other shared settings than this config's")
        autoencoder.load_state_dict({k: v for k, v in checkpoint["ema"].items() if not k.startswith("discriminator.")})
        LOG.info("autoencoder from %s (step %d)", path, checkpoint["state"]["step"])
    return LatentDiffusion(autoencoder.eval(), cfg, spec.context_slices, train_timesteps_of(spec))


# --- the trainer's hooks ------------------------------------------------------------------------------------------


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)), summed over latent elements, averaged over the batch."""
    per_element = mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-12) - 1.0
    return 0.5 * per_element.flatten(1).sum(dim=1).mean()


def ldm_training_step(
    net: nn.Module, batch: dict[str, torch.Tensor], config, use_amp: bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """One forward pass and loss of an ldm_* kind; diagnostics are plain floats for the CSV log."""
    cfg = ldm_config(config)
    device_type = batch["ct"].device.type
    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16  # as training.train.amp_dtype
    with torch.autocast(device_type, dtype=dtype, enabled=use_amp):
        if config.model.kind == "ldm_autoencoder":
            recon, mu, sigma = net(batch["ct"])
        else:
            pred, target = net(batch["mr"], batch["ct"])
    if config.model.kind == "ldm_autoencoder":
        l1 = F.l1_loss(recon.float(), batch["ct"])
        kl = kl_divergence(mu.float(), sigma.float())
        loss = l1 + cfg.kl_weight * kl
        diagnostics = {"l1": float(l1.detach()), "kl": float(kl.detach())}
        if cfg.adversarial_weight > 0:
            adversarial, critic = _adversarial_terms(net, batch["ct"], recon.float())
            loss = loss + cfg.adversarial_weight * adversarial + critic
            diagnostics |= {"adversarial": float(adversarial.detach()), "critic": float(critic.detach())}
        return loss, {"loss": float(loss.detach()), **diagnostics}  # the loss logged is the loss optimised
    loss = F.mse_loss(pred.float(), target.float())
    return loss, {"loss": float(loss.detach())}


def _adversarial_terms(net: nn.Module, real: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares GAN terms for one optimizer: the generator's (critic frozen, so its gradient reaches only the
    autoencoder) and the critic's (on a detached reconstruction, so its gradient reaches only the critic)."""
    if isinstance(net, nn.parallel.DistributedDataParallel):
        raise TrainingError("ldm.adversarial_weight > 0 is single-process only (its critic runs outside DDP's forward)")
    critic = net.discriminator
    critic.requires_grad_(False)
    adversarial = (critic(recon)[-1] - 1.0).pow(2).mean()
    critic.requires_grad_(True)
    critic_loss = 0.5 * ((critic(real)[-1] - 1.0).pow(2).mean() + critic(recon.detach())[-1].pow(2).mean())
    return adversarial, critic_loss


@torch.no_grad()
def sample_latents(
    model: LatentDiffusion, stacks: np.ndarray, seeds: np.ndarray, steps: int, device: torch.device
) -> np.ndarray:
    """DDIM in latent space with engine.ldm_sampler's loop (NumPy), the torch networks standing in for the ONNX files."""
    cond = model.condition(torch.from_numpy(np.ascontiguousarray(stacks, dtype=np.float32)).to(device))
    noise = slice_noise(seeds, model.latent_channels, *cond.shape[2:])

    def denoise(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        out = model.denoise(torch.from_numpy(x).to(device), torch.from_numpy(t).to(device), cond)
        return out.float().cpu().numpy()

    alpha_bars = alphas_cumprod(model.train_timesteps)
    return ddim_sample(denoise, noise, alpha_bars, ddim_timesteps(model.train_timesteps, steps), model.prediction)


@torch.no_grad()
def ldm_predict_volume(
    model: nn.Module,
    volume,
    spec: ModelSpec,
    device: torch.device,
    config,
    steps: int | None = None,
    sample: int = 0,
    batch_size: int = 8,
) -> np.ndarray:
    """Validation output in the normalised CT space: the autoencoder's reconstruction of the CT (stage 1) or the
    MR-conditioned DDIM sample decoded (stage 2), every slice with the engine's per-slice seeds."""
    model.eval()
    if isinstance(model, SliceAutoencoder):
        ct = np.asarray(volume.ct, dtype=np.float32)
        out = np.empty_like(ct)
        for start in range(0, ct.shape[0], batch_size):
            chunk = torch.from_numpy(ct[start : start + batch_size, None]).to(device)
            out[start : start + batch_size] = (
                model.decode(model.encode_mean(chunk))[:, 0].clamp(-1, 1).float().cpu().numpy()
            )
        return out
    steps = steps or ldm_config(config).val_ddim_steps
    seed = int(spec.sampler.get("seed", 0))
    mr = np.asarray(volume.mr, dtype=np.float32)
    out = np.empty_like(mr)
    scale = float(model.latent_scale) or 1.0
    for centres, stacks in iter_slice_batches(mr, spec.context_slices, batch_size):
        latent = sample_latents(model, stacks, slice_seeds(seed, sample, centres), steps, device)
        ct = model.autoencoder.decode(torch.from_numpy(latent / np.float32(scale)).to(device))
        out[centres] = ct[:, 0].clamp(-1, 1).float().cpu().numpy()
    return out


# --- export: three ONNX files of a manifest entry of kind "latent_diffusion" ------------------------------------


class _DenoiserGraph(nn.Module):
    def __init__(self, model: LatentDiffusion) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.model.denoise(x, t, cond)


class _CtEncoderGraph(nn.Module):
    def __init__(self, autoencoder: SliceAutoencoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, ct: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode_mean(ct)


class _DecoderGraph(nn.Module):
    def __init__(self, autoencoder: SliceAutoencoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z)


def _to_onnx(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    output: str,
    dynamic: dict[str, dict[int, str]],
) -> None:
    """TorchScript-based export (`dynamo=False`), as training/networks.py does: dynamic axes, no extra package.

    Its tracer warns about shape checks in MONAI's blocks that are constant for a given channel count; those
    warnings are silenced, and `onnx_parity` checks the result on another batch and size instead.
    """
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=[output],
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def export_onnx_files(model: LatentDiffusion, out_dir: Path, name: str, context_slices: int) -> dict[str, Path]:
    """Write `<name>_{encoder,denoiser,decoder,ct_encoder}.onnx` (batch, height, width dynamic); returns role -> path.

    `ct_encoder` (CT slice `ct` [B, 1, H, W] -> latent mean `z`, unscaled) is not used by the sampler: it lets
    benchmarks/bench_ldm.py measure the autoencoder's reconstruction error, the bound on the fallback's accuracy,
    from the shipped files alone.
    """
    model = model.cpu().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    factor = model.autoencoder.downsampling
    size = 16 * factor  # the example size only fixes nothing: every spatial axis is dynamic
    mr = torch.zeros(1, context_slices, size, size)
    with torch.no_grad():
        cond = model.condition(mr)
    latent = torch.zeros(1, model.latent_channels, size // factor, size // factor)
    spatial = {0: "batch", 2: "height", 3: "width"}
    paths = {role: out_dir / f"{name}_{role}.onnx" for role in ("encoder", "denoiser", "decoder", "ct_encoder")}
    _to_onnx(model.condition, (mr,), paths["encoder"], ["mr"], "cond", {"mr": spatial, "cond": spatial})
    _to_onnx(
        _DenoiserGraph(model),
        (latent, torch.zeros(1, dtype=torch.int64), cond),
        paths["denoiser"],
        ["x", "t", "cond"],
        model.prediction,
        {"x": spatial, "t": {0: "batch"}, "cond": spatial, model.prediction: spatial},
    )
    _to_onnx(_DecoderGraph(model.autoencoder), (latent,), paths["decoder"], ["z"], "ct", {"z": spatial, "ct": spatial})
    _to_onnx(
        _CtEncoderGraph(model.autoencoder),
        (torch.zeros(1, 1, size, size),),
        paths["ct_encoder"],
        ["ct"],
        "z",
        {"ct": spatial, "z": spatial},
    )
    return paths


def onnx_parity(model: LatentDiffusion, paths: dict[str, Path], context_slices: int, seed: int = 0) -> dict[str, float]:
    """Largest |ONNX Runtime - PyTorch| of each file on seeded random inputs of an odd batch and a non-square size."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    factor = model.autoencoder.downsampling
    levels = 2 ** (len(model.unet.block_out_channels) - 1)
    height, width = 3 * factor * levels, 2 * factor * levels
    mr = rng.standard_normal((3, context_slices, height, width), dtype=np.float32)
    x = rng.standard_normal((3, model.latent_channels, height // factor, width // factor), dtype=np.float32)
    ct = np.tanh(rng.standard_normal((3, 1, height, width), dtype=np.float32))
    t = np.array([0, model.train_timesteps // 2, model.train_timesteps - 1], dtype=np.int64)

    def run(role: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        session = ort.InferenceSession(str(paths[role]), providers=["CPUExecutionProvider"])
        return session.run(None, feeds)[0]

    with torch.no_grad():
        cond = model.condition(torch.from_numpy(mr))
        reference = {
            "encoder": cond.numpy(),
            "denoiser": model.denoise(torch.from_numpy(x), torch.from_numpy(t), cond).numpy(),
            "decoder": model.autoencoder.decode(torch.from_numpy(x)).numpy(),
            "ct_encoder": model.autoencoder.encode_mean(torch.from_numpy(ct)).numpy(),
        }
    outputs = {
        "encoder": run("encoder", {"mr": mr}),
        "denoiser": run("denoiser", {"x": x, "t": t, "cond": cond.numpy()}),
        "decoder": run("decoder", {"z": x}),
        "ct_encoder": run("ct_encoder", {"ct": ct}),
    }
    return {role: float(np.abs(outputs[role] - reference[role]).max()) for role in reference if role in paths}


def export_ldm(
    checkpoint: dict[str, Any], checkpoint_path: Path, out_dir: Path, name: str
) -> tuple[dict[str, Path], dict[str, Any], dict[str, Any]]:
    """A stage-2 checkpoint -> its three ONNX files, the entry's shared settings and kind-specific provenance.

    The settings carry the sampler: train_timesteps, ddim_steps and the trained latent_scale.
    """
    from engine.manifest import build_spec
    from training.config import config_from_dict

    config = config_from_dict(checkpoint["config"], str(checkpoint_path))
    if config.model.kind != "ldm_denoiser":
        raise TrainingError(
            f"{checkpoint_path}: an {config.model.kind} checkpoint cannot be exported alone; export the "
            "ldm_denoiser run's checkpoint (it holds the autoencoder too)"
        )
    settings = dict(checkpoint["settings"])
    spec = build_spec("export", {"kind": "latent_diffusion", **settings}, {}, Path("."), require_files=False)
    model = build_ldm_network(config, spec, load_autoencoder=False)
    model.load_state_dict(checkpoint["ema"])
    scale = float(model.latent_scale)
    if not scale > 0:
        raise TrainingError(f"{checkpoint_path}: latent_scale was never set (the denoiser did not train a step)")
    paths = export_onnx_files(model, out_dir, name, spec.context_slices)
    parity = onnx_parity(model, paths, spec.context_slices)
    LOG.info("ONNX Runtime vs PyTorch, max |difference|: %s", parity)
    worst = max(parity.values())
    if not worst <= PARITY_TOLERANCE:
        raise TrainingError(f"{out_dir}: ONNX export of {name} disagrees with PyTorch by {worst:.3g}")
    cfg = ldm_config(config)
    settings["sampler"] = {
        **settings.get("sampler", {}),
        "train_timesteps": model.train_timesteps,
        "ddim_steps": int(settings.get("sampler", {}).get("ddim_steps", DEFAULT_DDIM_STEPS)),
        "latent_scale": round(scale, 6),
    }
    provenance: dict[str, Any] = {
        "ldm": asdict(cfg),
        "schedule": {"betas": "scaled_linear", "beta_start": BETA_START, "beta_end": BETA_END},
        "onnx_parity_max_abs": parity,
        "sha256_checkpoint": sha256_of(checkpoint_path),
    }
    autoencoder_path = Path(cfg.autoencoder)
    if autoencoder_path.is_file():
        stage1 = torch.load(autoencoder_path, map_location="cpu", weights_only=False)
        provenance["autoencoder"] = {
            "training_command": stage1.get("command", ""),
            "steps": stage1["state"]["step"],
            "best_step": stage1["state"]["best_step"],
            "validation": {
                k: round(v, 4)
                for k, v in stage1.get("scores", {}).items()
                if isinstance(v, float) and k.startswith("val_")
            },
        }
    return paths, settings, provenance
