"""Train a 2.5D slice generator (drifting or L1-only) on the released data layout.

    python -m training.train --config configs/drifting.toml [--set optim.steps=500] [--resume]
    torchrun --nproc_per_node=2 -m training.train --config ...        # DistributedDataParallel

Writes into run.out_dir: config.json, log.csv (losses, raw ||V||^2 per temperature, validation metrics),
last.pt (resume), best.pt (lowest validation MAE, EMA weights) and TensorBoard events when tensorboard is
installed. Validation scores whole held-out volumes on their own grid with the challenge's metrics.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from engine.generators import slice_noise
from engine.manifest import ModelSpec, training_spec
from evaluation.metrics import score_case
from modelspec import hu_to_normalised
from phantoms.randomise import Randomisation, RandomisationError
from pipeline.run import slice_seeds
from postprocessing import finalise_hu, to_input_grid
from preprocessing.slices import iter_slice_batches
from training.config import OptimConfig, TrainConfig, load_config
from training.dataset import SliceCrops, TrainingVolume, find_cases, load_volume, release_cases, split_cases
from training.errors import TrainingError
from training.ldm import LDM_KINDS  # the latent-diffusion fallback's two stages: the hooks below hand them over
from training.splits import SplitError, check_covers, load_split

LOG = logging.getLogger("training")


# --- what differs between model kinds lives here --------------------------------------------------------------


def build_network(config: TrainConfig, spec: ModelSpec) -> torch.nn.Module:
    """The 2.5D generator for this config (the L1-only baseline is the same network)."""
    if config.model.kind in LDM_KINDS:
        from training.ldm import build_ldm_network

        return build_ldm_network(config, spec)
    from training.family import build_generator

    return build_generator(config.model, spec.context_slices, float(hu_to_normalised(0.0, spec.ct_window_hu)))


def check_network_grid(config: TrainConfig, spec: ModelSpec) -> None:
    """Refuse, before any data loads, a network whose stride the manifest grid or the training crop cannot carry."""
    if config.model.kind in LDM_KINDS:
        return
    from training.family import network_stride

    try:
        stride = network_stride(config.model)
    except ValueError as err:
        raise TrainingError(str(err)) from err
    if spec.divisible_by % stride:
        raise TrainingError(
            f"settings.divisible_by = {spec.divisible_by} is not a multiple of the network's stride {stride} "
            f"(model.arch {config.model.arch!r}): set [settings] divisible_by = {stride} (it travels into the manifest)"
        )
    if config.data.crop % stride:
        raise TrainingError(f"data.crop = {config.data.crop} is not a multiple of the network's stride {stride}")


def build_objective(config: TrainConfig, device: torch.device, spec: ModelSpec | None = None):
    """The generator's loss (drifting + L1 + anatomy; no drift for kind "l1"), with its frozen networks and bank."""
    if config.model.kind in LDM_KINDS:
        return None
    from training.drifting import DriftObjective

    drift = replace(config.loss, lambda_drift=0.0) if config.model.kind == "l1" else config.loss
    try:
        return DriftObjective(drift, config.manifest, device, None if spec is None else spec.ct_window_hu)
    except ValueError as err:  # an encoder that cannot be built (its file missing or not matching)
        raise TrainingError(str(err)) from err


def training_step(
    net: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    config: TrainConfig,
    generator: torch.Generator,
    use_amp: bool,
    objective=None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One forward pass and its loss (and log diagnostics)."""
    if config.model.kind in LDM_KINDS:
        from training.ldm import ldm_training_step

        return ldm_training_step(net, batch, config, use_amp)
    objective = objective or build_objective(config, batch["mr"].device)
    noise = torch.randn(
        batch["mr"].shape[0], config.model.noise_channels, *batch["mr"].shape[2:], device=batch["mr"].device
    )
    device_type = batch["mr"].device.type
    with torch.autocast(device_type, dtype=amp_dtype(device_type), enabled=use_amp):
        pred = net(batch["mr"], noise)
    total, terms = objective(pred.float(), batch["ct"], batch["mask"], generator)
    return total, terms.as_dict()


def amp_dtype(device_type: str) -> torch.dtype:
    """float16 on a GPU (with a gradient scaler), bfloat16 on the CPU (AVX512-BF16 / AMX make it ~1.6x faster)."""
    return torch.float16 if device_type == "cuda" else torch.bfloat16


def use_mixed_precision(config: TrainConfig, device: torch.device) -> bool:
    """optim.amp on a GPU; optim.cpu_bf16 on the CPU (its accuracy is checked against fp32 in the tests)."""
    return config.optim.amp if device.type == "cuda" else config.optim.cpu_bf16


def predict_for_validation(
    model: torch.nn.Module, volume: TrainingVolume, spec: ModelSpec, device: torch.device, config: TrainConfig
) -> np.ndarray:
    """The model's output for a whole held-out volume, in the normalised CT space."""
    if config.model.kind in LDM_KINDS:
        from training.ldm import ldm_predict_volume

        return ldm_predict_volume(model, volume, spec, device, config)
    return predict_volume(model, volume.mr, spec, device, config.model.noise_channels)


def training_cases(cases: list[tuple[Path, str]], config: TrainConfig) -> tuple[list, list]:
    """(train, validation) cases: from the committed split file when data.split is set (test cases never load)."""
    if not config.data.split:
        return split_cases(cases, config.data.val_per_region, config.run.seed)
    split = load_split(config.data.split)
    check_covers(split, cases)
    if config.data.fold >= 0:
        train_ids, val_ids = split.fold(config.data.fold)
        return split.select_ids(cases, train_ids), split.select_ids(cases, val_ids)
    return split.select(cases, "train"), split.select(cases, "val")


# --- distributed helpers ----------------------------------------------------------------------------------------


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the process group when started by torchrun (gloo on the CPU, nccl on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    state = Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(state.local_rank)
    return state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- validation: whole held-out volumes, scored on their own grid like the challenge ---------------------------


@dataclass
class Reference:
    """Ground truth of a held-out case on its input grid."""

    ct: np.ndarray
    mask: np.ndarray


def load_reference(volume: TrainingVolume) -> Reference:
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(volume.case_dir / "ct.mha")))
    return Reference(ct=ct, mask=volume.prepared.mask)


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module,
    volume: np.ndarray,
    spec: ModelSpec,
    device: torch.device,
    noise_channels: int,
    batch_size: int = 8,
    sample: int = 0,
) -> np.ndarray:
    """The model on every slice, with the inference engine's per-slice noise seeds."""
    model.eval()
    out = np.empty_like(volume)
    seed = int(spec.sampler.get("seed", 0))
    for centres, stacks in iter_slice_batches(volume, spec.context_slices, batch_size):
        noise = slice_noise(slice_seeds(seed, sample, centres), noise_channels, *stacks.shape[2:])
        pred = model(
            torch.from_numpy(stacks.astype(np.float32, copy=False)).to(device), torch.from_numpy(noise).to(device)
        )
        out[centres] = pred[:, 0].float().cpu().numpy()
    return out


def validate(
    model: torch.nn.Module,
    volumes: list[TrainingVolume],
    references: list[Reference],
    spec: ModelSpec,
    device: torch.device,
    config: TrainConfig,
) -> dict[str, float]:
    """Mean MAE / PSNR / MS-SSIM over held-out volumes, and per region MAE."""
    scores: dict[str, list[float]] = {"mae": [], "psnr": [], "ms_ssim": []}
    per_region: dict[str, list[float]] = {}
    for volume, reference in zip(volumes, references):
        pred = predict_for_validation(model, volume, spec, device, config)
        sct = finalise_hu(to_input_grid(pred, volume.prepared, spec.ct_window_hu), reference.mask, spec)
        case = score_case(reference.ct, sct, reference.mask)
        for key in scores:
            scores[key].append(float(case[key]))
        per_region.setdefault(volume.region, []).append(float(case["mae"]))
    result = {f"val_{key}": float(np.mean(values)) for key, values in scores.items()}
    result.update({f"val_mae_{region}": float(np.mean(v)) for region, v in per_region.items()})
    return result


# --- the trainer --------------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    step: int = 0
    best_mae: float = float("inf")
    best_step: int = -1
    epoch_losses: list[float] = field(default_factory=list)


class CsvLog:
    """Append-only CSV whose columns grow as new keys appear (rewritten then, which is rare)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.is_file():
            with open(path, newline="") as handle:
                self.rows = list(csv.DictReader(handle))

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        columns: list[str] = []
        for item in self.rows:
            columns += [key for key in item if key not in columns]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for ema_param, param in zip(ema.parameters(), model.parameters()):
            ema_param.lerp_(param.detach(), 1.0 - decay)
        for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


def build_crops(config: TrainConfig, spec: ModelSpec, volumes: list[TrainingVolume], length: int) -> SliceCrops:
    """The training crops as configured, MR domain randomisation included (shared with the training benchmark)."""
    data, augment = config.data, config.augment
    for name, low, high in (
        ("blur_px", augment.min_blur_px, augment.max_blur_px),
        ("slice_blur", augment.min_slice_blur, augment.max_slice_blur),
    ):
        if not 0.0 <= low <= high:
            raise ValueError(f"augment.min_{name} ({low}) must be >= 0 and <= augment.max_{name} ({high})")
    randomisation = Randomisation(
        augment.mr_randomisation,
        augment.randomise_probability,
        augment.contrast_probability,
        blur_px=(augment.min_blur_px, augment.max_blur_px),
        slice_blur=(augment.min_slice_blur, augment.max_slice_blur),
        dark_bone_probability=augment.dark_bone_probability,
        faint_bone_probability=augment.faint_bone_probability,
    )
    return SliceCrops(
        volumes,
        spec.context_slices,
        data.crop,
        length,
        spec.normalisation.outside_value,
        seed=config.run.seed,
        randomisation=randomisation,
        ct_window_hu=spec.ct_window_hu,
        region_balanced=data.region_balanced,
        keep_histogram=augment.keep_histogram,
        extra=[is_extra_volume(v, config) for v in volumes] if data.extra_share else None,
        extra_share=data.extra_share,
        flip_probability=augment.flip_probability,
    )


@dataclass
class Session:
    """What a training run holds while it runs: the network, its EMA copy, the optimiser and the step state."""

    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: TrainState
    use_amp: bool


DATA_LAYOUTS = ("", "release")


def find_training_cases(config: TrainConfig) -> list[tuple[Path, str]]:
    """Every case of data.root in data.regions; with data.layout = "release" the official layout, checked strictly."""
    if config.data.extra_share and not config.data.extra_root:
        raise TrainingError("data.extra_share needs data.extra_root (the cases it draws from)")
    if config.data.layout not in DATA_LAYOUTS:
        raise TrainingError(f"data.layout must be one of {DATA_LAYOUTS}, got {config.data.layout!r}")
    if config.data.layout == "release":
        return release_cases(Path(config.data.root), list(config.data.regions))
    cases = find_cases(Path(config.data.root), list(config.data.regions))
    if not cases:
        raise TrainingError(f"{config.data.root}: no cases with mr/ct/mask in regions {config.data.regions}")
    if config.data.extra_root:
        extra = find_cases(Path(config.data.extra_root), list(config.data.regions))
        if not extra:
            raise TrainingError(f"data.extra_root {config.data.extra_root}: no cases with mr/ct/mask")
        cases += extra
    return cases


def is_extra_volume(volume: TrainingVolume, config: TrainConfig) -> bool:
    """Whether a training volume comes from data.extra_root (its share of crops is data.extra_share)."""
    if not config.data.extra_root:
        return False
    return Path(volume.case_dir).resolve().is_relative_to(Path(config.data.extra_root).resolve())


def _training_volumes(config: TrainConfig, spec: ModelSpec, cases: list, main: bool) -> list[TrainingVolume]:
    """Training volumes: memory-mapped from the preprocessing cache when data.cache is set, else compact in memory."""
    if config.data.cache:
        return _cached_volumes(config, spec, cases, main)
    return [load_volume(d, r, spec, compact=True) for d, r in tqdm(cases, desc="loading", disable=not main)]


def load_training_volumes(config: TrainConfig, spec: ModelSpec) -> tuple[list[TrainingVolume], list[TrainingVolume]]:
    """(training, validation) volumes in model space, both compact: for tools that crop them (the anatomy network)."""
    train_cases, val_cases = training_cases(find_training_cases(config), config)
    LOG.info("%d training and %d validation cases from %s", len(train_cases), len(val_cases), config.data.root)
    return _training_volumes(config, spec, train_cases, True), [
        load_volume(d, r, spec, compact=True) for d, r in val_cases
    ]


def _load_data(config: TrainConfig, spec: ModelSpec, main: bool, out_dir: Path, cases: list[tuple[Path, str]]):
    """Training volumes (compact, in memory), validation volumes and their references on the input grid."""
    train_cases, val_cases = training_cases(cases, config)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        LOG.info("%d training and %d validation cases from %s", len(train_cases), len(val_cases), config.data.root)
    volumes = _training_volumes(config, spec, train_cases, main)
    val_volumes = [load_volume(d, r, spec) for d, r in val_cases] if main else []
    return volumes, val_volumes, [load_reference(v) for v in val_volumes]


def _cached_volumes(config: TrainConfig, spec: ModelSpec, cases: list, main: bool) -> list[TrainingVolume]:
    """Training volumes memory-mapped from the preprocessing cache; the main process first builds what is stale."""
    from training.cache import CacheError, build_cache, load_cached

    cache = Path(config.data.cache)
    try:
        if main:
            report = build_cache(cases, spec, cache, config.data.cache_workers)
            LOG.info("cache %s: %d built, %d reused, %.0f MB", cache, report.built, report.reused, report.bytes / 1e6)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # the other ranks read what the main rank built
        return [load_cached(d, r, spec, cache) for d, r in cases]
    except CacheError as err:
        raise TrainingError(str(err)) from err


def _start_session(config: TrainConfig, spec: ModelSpec, device: torch.device, out_dir: Path, resume: bool) -> Session:
    """A new network, EMA copy and optimiser, or all of them restored from out_dir/last.pt when resuming."""
    model = build_network(config, spec).to(device)
    ema = copy.deepcopy(model).eval()
    for param in ema.parameters():
        param.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    use_amp = use_mixed_precision(config, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and device.type == "cuda")
    state = TrainState()
    if resume and (out_dir / "last.pt").is_file():
        checkpoint = torch.load(out_dir / "last.pt", map_location=device, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        state = TrainState(**checkpoint["state"])
        LOG.info("resumed from step %d", state.step)
    elif config.run.init_from:
        if config.model.kind in LDM_KINDS:
            raise TrainingError("run.init_from is for the one-step generator (kinds drifting and l1)")
        from training.initial_weights import load_initial_weights

        load_initial_weights(
            model,
            config.run.init_from,
            spec.context_slices,
            config.model.noise_channels,
            tuple(spec.ct_window_hu),
        )
        ema.load_state_dict(model.state_dict())
    return Session(model, ema, optimizer, scaler, state, use_amp)


LR_SCHEDULES = ("constant", "cosine")


def check_lr_schedule(optim: OptimConfig) -> None:
    """Refuse an unknown schedule or a floor outside [0, 1] once, before any data loads (not on every step)."""
    if optim.lr_schedule not in LR_SCHEDULES:
        raise TrainingError(f"optim.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {optim.lr_schedule!r}")
    if not 0.0 <= optim.lr_floor <= 1.0:
        raise TrainingError(f"optim.lr_floor must be a share of optim.lr between 0 and 1, got {optim.lr_floor}")


def learning_rate(optim: OptimConfig, step: int) -> float:
    """The learning rate of the update that follows `step` updates.

    `constant` keeps `optim.lr` (the recipe every shipped model used). `cosine` falls from `optim.lr` to
    `optim.lr * optim.lr_floor` at `optim.steps` along half a cosine: at a constant rate the weights keep wandering
    (the validation MAE of 5000-step fine-tunes moved by up to 9 HU between checkpoints 1000 steps apart), a decaying
    one lets the last steps settle. The schedule is laid over `optim.steps`, so resuming with more steps reshapes it.
    `train` has checked the settings (`check_lr_schedule`).
    """
    if optim.lr_schedule == "constant":
        return optim.lr
    progress = min(max(step / max(optim.steps, 1), 0.0), 1.0)
    return optim.lr * (optim.lr_floor + (1.0 - optim.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _optimiser_step(session: Session, net, batch, config: TrainConfig, loss_generator, objective):
    """One step: loss, scaled backward, clipped gradients, optimiser and EMA update; returns loss and diagnostics."""
    session.model.train()
    if objective is not None:
        objective.step = session.state.step  # the drift's schedule (loss.drift_start, loss.drift_ramp)
    for group in session.optimizer.param_groups:
        group["lr"] = learning_rate(config.optim, session.state.step)
    loss, diagnostics = training_step(net, batch, config, loss_generator, session.use_amp, objective)
    session.optimizer.zero_grad(set_to_none=True)
    session.scaler.scale(loss).backward()
    session.scaler.unscale_(session.optimizer)
    torch.nn.utils.clip_grad_norm_(session.model.parameters(), config.optim.grad_clip)
    session.scaler.step(session.optimizer)
    session.scaler.update()
    update_ema(session.ema, session.model, config.optim.ema_decay)
    session.state.step += 1
    return loss, diagnostics


def train(config: TrainConfig, resume: bool = False, command: str = "") -> dict[str, Any]:
    """Run training as configured; returns a summary (best step, best validation scores, wall time)."""
    check_lr_schedule(config.optim)
    if "{fold}" in config.run.init_from:
        raise TrainingError(f"run.init_from {config.run.init_from!r} names a fold: give --fold K")
    dist_state = init_distributed()
    started = time.perf_counter()
    seed_everything(config.run.seed + dist_state.rank)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    device = torch.device(f"cuda:{dist_state.local_rank}" if torch.cuda.is_available() else "cpu")
    out_dir = Path(config.run.out_dir)
    spec = training_spec(
        config.manifest, "latent_diffusion" if config.model.kind in LDM_KINDS else "one_step", config.settings
    )
    check_network_grid(config, spec)
    cases = find_training_cases(config)  # the data folder's layout first, then the losses' networks, then the data
    objective = build_objective(config, device, spec)
    volumes, val_volumes, references = _load_data(config, spec, dist_state.main, out_dir, cases)

    dataset = build_crops(config, spec, volumes, config.data.samples_per_epoch)
    loader, sampler = _loader(config, dataset, dist_state)
    session = _start_session(config, spec, device, out_dir, resume)
    model, ema, optimizer, scaler, state = session.model, session.ema, session.optimizer, session.scaler, session.state
    net = DistributedDataParallel(model) if dist_state.world > 1 else model

    log = CsvLog(out_dir / "log.csv") if dist_state.main else None
    board = _tensorboard(out_dir) if dist_state.main else None
    if dist_state.main:
        record = {"config": config.to_dict(), "settings": spec.settings(), "command": command}
        (out_dir / "config.json").write_text(json.dumps(record, indent=2, default=str))
    loss_generator = torch.Generator(device="cpu").manual_seed(config.run.seed + 1000 * dist_state.rank)
    steps_per_epoch = max(1, len(loader))
    epoch = state.step // steps_per_epoch
    bar = tqdm(total=config.optim.steps, initial=state.step, desc="train", disable=not dist_state.main)
    running: dict[str, list[float]] = {}
    stop = False
    step_seconds = 0.0  # time in optimiser steps only (not loading, validation, checkpoints): run.max_train_seconds
    while state.step < config.optim.steps and not stop:
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        epoch_loss = []
        for batch in loader:
            if state.step >= config.optim.steps:
                break
            step_started = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            loss, diagnostics = _optimiser_step(session, net, batch, config, loss_generator, objective)
            epoch_loss.append(float(loss.detach()))
            step_seconds += time.perf_counter() - step_started
            for key, value in diagnostics.items():
                running.setdefault(key, []).append(float(value))
            bar.update(1)
            stop = _out_of_time(step_seconds, config, dist_state, device)
            validating = state.step % config.run.val_every == 0 or state.step == config.optim.steps or stop
            if dist_state.main and (state.step % config.run.log_every == 0 or validating):
                # Validation has its own schedule: a val_every off the logging grid must still validate.
                row = {"step": state.step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
                row.update({k: float(np.mean(v)) for k, v in running.items()})
                running = {}
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                if validating:
                    _validate_and_keep_best(
                        row, session, val_volumes, references, spec, device, config, out_dir, command
                    )
                _write_row(row, log, board)
            if dist_state.main and (state.step % config.run.checkpoint_every == 0 or state.step == config.optim.steps):
                _save(out_dir / "last.pt", model, ema, optimizer, scaler, state, config, spec, {}, command)
            if stop:
                LOG.info("time budget: %.0f s of training steps used at step %d", step_seconds, state.step)
                break
        epoch += 1
        state.epoch_losses.append(float(np.mean(epoch_loss)) if epoch_loss else float("nan"))
        stop = stop or _early_stop(state.epoch_losses, config)
        if stop and dist_state.main:
            LOG.info(
                "early stop after epoch %d: loss fell less than %.0f%% over %d epochs",
                epoch,
                100 * config.run.early_stop_min_improvement,
                config.run.early_stop_epochs,
            )
    bar.close()
    if dist_state.main:
        if not (out_dir / "best.pt").is_file():  # no validation happened: the final weights are the best known
            _save(out_dir / "best.pt", model, ema, optimizer, scaler, state, config, spec, {}, command)
        _save(out_dir / "last.pt", model, ema, optimizer, scaler, state, config, spec, {}, command)
    if dist_state.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    summary = {
        "steps": state.step,
        "best_step": state.best_step,
        "best_val_mae": state.best_mae,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "train_seconds": round(step_seconds, 1),
    }
    if dist_state.main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _loader(config: TrainConfig, dataset: SliceCrops, dist_state: Distributed):
    """The training DataLoader (seeded shuffling; under DDP each rank its own share through a DistributedSampler)."""
    sampler = (
        DistributedSampler(dataset, dist_state.world, dist_state.rank, shuffle=True, seed=config.run.seed)
        if dist_state.world > 1
        else None
    )
    loader = DataLoader(
        dataset,
        batch_size=config.optim.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=config.run.workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(config.run.seed),
    )
    return loader, sampler


def _write_row(row: dict, log: CsvLog, board) -> None:
    """One log row to the CSV log and, when installed, TensorBoard."""
    log.write(row)
    if board is not None:
        for key, value in row.items():
            if isinstance(value, float):
                board.add_scalar(key, value, row["step"])


def _validate_and_keep_best(
    row: dict,
    session: Session,
    val_volumes,
    references,
    spec: ModelSpec,
    device,
    config: TrainConfig,
    out_dir: Path,
    command: str,
) -> None:
    """Score the EMA weights on the validation volumes into `row`; a new best validation MAE saves best.pt."""
    state = session.state
    row.update(validate(session.ema, val_volumes, references, spec, device, config))
    if row["val_mae"] < state.best_mae:
        state.best_mae, state.best_step = row["val_mae"], state.step
        _save(
            out_dir / "best.pt",
            session.model,
            session.ema,
            session.optimizer,
            session.scaler,
            state,
            config,
            spec,
            row,
            command,
        )
    LOG.info(
        "step %d: val MAE %.1f HU, PSNR %.2f dB, MS-SSIM %.4f (best MAE %.1f at %d)",
        state.step,
        row["val_mae"],
        row["val_psnr"],
        row["val_ms_ssim"],
        state.best_mae,
        state.best_step,
    )


def _out_of_time(step_seconds: float, config: TrainConfig, dist_state: Distributed, device: torch.device) -> bool:
    """run.max_train_seconds spent in optimiser steps (rank 0's clock decides, so every rank stops at one step)."""
    if config.run.max_train_seconds <= 0:
        return False
    flag = torch.tensor([float(step_seconds >= config.run.max_train_seconds)], device=device)
    if dist_state.world > 1:
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def _early_stop(losses: list[float], config: TrainConfig) -> bool:
    """The original design's rule: stop when the epoch loss fell by less than min_improvement over the last N epochs."""
    window = config.run.early_stop_epochs
    if window <= 0 or len(losses) <= window:
        return False
    before, now = losses[-window - 1], losses[-1]
    return not (now < before * (1.0 - config.run.early_stop_min_improvement))


def _save(
    path: Path,
    model,
    ema,
    optimizer,
    scaler,
    state: TrainState,
    config: TrainConfig,
    spec: ModelSpec,
    scores: dict[str, Any],
    command: str,
) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "state": state.__dict__,
            "config": config.to_dict(),
            "settings": spec.settings(),
            "scores": scores,
            "command": command,
        },
        temporary,
    )
    os.replace(temporary, path)


def with_fold(config: TrainConfig, fold: int) -> TrainConfig:
    """The config for cross-validation fold `fold`: its cases from data.split, its own run folder (nnU-Net's fold_K)."""
    if fold < 0:
        raise ValueError(f"--fold must be >= 0, got {fold}")
    if not config.data.split:
        raise ValueError("--fold needs data.split: a split file with folds (python -m training.splits kfold)")
    return replace(
        config,
        data=replace(config.data, fold=fold),
        run=replace(
            config.run,
            out_dir=str(Path(config.run.out_dir) / f"fold_{fold}"),
            init_from=config.run.init_from.replace("{fold}", str(fold)),  # a per-fold fine-tune starts from its fold
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        help="TOML config (see configs/); give it again to layer an overlay on top, e.g. a region group: "
        "--config configs/drifting_gpu.toml --config configs/regions/HN.toml",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (JSON-parsed), e.g. --set optim.steps=200",
    )
    parser.add_argument("--resume", action="store_true", help="continue from run.out_dir/last.pt")
    parser.add_argument(
        "--fold",
        type=int,
        help="train cross-validation fold K of data.split's folds (python -m training.splits kfold); "
        "writes to run.out_dir/fold_K",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    config = load_config(args.config, args.set)
    if args.fold is not None:
        try:
            config = with_fold(config, args.fold)
        except ValueError as err:
            parser.error(str(err))
    command = " ".join(["python -m training.train"] + (argv if argv is not None else __import__("sys").argv[1:]))
    try:
        summary = train(config, resume=args.resume, command=command)
    except (TrainingError, SplitError, RandomisationError) as err:
        LOG.error("%s", err)
        return 2
    LOG.info("done: %s", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
