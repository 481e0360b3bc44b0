"""Training configuration: a TOML file read into frozen dataclasses, with `--set section.key=value` overrides.

Settings shared with inference (normalisation, spacing, context slices, HU window) are NOT here: they come
from the manifest's defaults plus `[settings]` overrides, and travel with the checkpoint into the exported
manifest entry.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.regions import default_regions
from training.drifting import DriftConfig
from training.family import resolve_preset


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/phantoms"
    layout: str = (
        ""  # "": any <region>/<id>/{mr,ct,mask}.mha below root; "release": the official layout, checked strictly
    )
    regions: tuple[str, ...] = field(default_factory=default_regions)  # the current challenge's (engine/regions.json)
    val_per_region: int = 2  # without a split file: a seeded draw of this many validation cases per region
    split: str = ""  # a split file (training/splits.py): train and val from it, its test cases never load
    fold: int = -1  # >= 0: cross-validation fold of the split file (its folds); -1: the file's train / val
    crop: int = 128
    samples_per_epoch: int = 512
    region_balanced: bool = False  # draw each crop's region uniformly first (the shipped recipe: every volume alike)
    extra_root: str = ""  # a second data root (e.g. template-derived heads); its cases join the split like root's
    extra_share: float = 0.0  # > 0: this share of the crops comes from extra_root's training cases, the rest from root
    cache: str = ""  # a preprocessing cache folder (training/cache.py): training volumes memory-mapped from it
    cache_workers: int = 1  # processes that build stale cache entries


@dataclass(frozen=True)
class AugmentConfig:
    """MR domain randomisation of the training crops (phantoms/randomise.py): the `[augment]` section.

    Off by default; the shipped recipes leave it off. Everything but `mr_randomisation` acts only when it is on, and
    the bone and histogram knobs are the real-MR experiments' (README, training/README.md), each off at its default.
    Configs and checkpoints written before this section existed name these keys under `[data]`; they still read.
    """

    mr_randomisation: str = "off"  # off, physics or full
    randomise_probability: float = 0.8  # share of crops randomised
    contrast_probability: float = 0.5  # ("full") share of randomised crops whose tissue contrast is redrawn
    min_blur_px: float = 0.0  # smallest in-plane Gaussian sigma of the resolution randomisation (pixels)
    max_blur_px: float = 1.5  # largest in-plane Gaussian sigma of the resolution randomisation (pixels)
    min_slice_blur: float = 0.0  # smallest Gaussian sigma across the context slices (slices)
    max_slice_blur: float = 0.6  # largest Gaussian sigma across the context slices (slices)
    dark_bone_probability: float = 0.0  # share of randomised crops whose bone (CT >= 200 HU) MR signal is darkened
    faint_bone_probability: float = 0.0  # share of randomised crops whose bone MR fades towards the tissue around it
    keep_histogram: bool = False  # randomised crops keep their in-body histogram (with mr_normalisation.landmarks)
    flip_probability: float = 0.0  # share of crops mirrored left-right (MR stack, CT and mask together); any level


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "drifting"  # drifting (lambda_drift > 0) or l1 (the same network, lambda_drift = 0)
    # The network family (training/family.py): a preset S, M or L fills the keys below that the config leaves out
    preset: str = ""
    arch: str = "unet"  # unet (DriftingUNet, preset S) or flexible_unet (MONAI FlexibleUNet, ResNet encoder: M, L)
    width: int = 16  # unet
    depth: int = 4  # unet; the shipped generator's (configs/drifting.toml)
    noise_channels: int = 1
    channel_mult: tuple[int, ...] = ()  # unet: per level multiple of width (empty: the default 1, 2, 3, 4, 4, ...)
    backbone: str = "resnet34"  # flexible_unet: resnet10, resnet18 or resnet34
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)  # flexible_unet: the five decoder levels


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    weight_decay: float = 1e-4
    batch_size: int = 8
    steps: int = 2000
    ema_decay: float = 0.995
    amp: bool = True  # mixed precision (float16) on a GPU
    cpu_bf16: bool = False  # bfloat16 autocast on the CPU
    grad_clip: float = 1.0
    lr_schedule: str = "constant"  # constant, or cosine: from lr down to lr * lr_floor at optim.steps
    lr_floor: float = 0.05  # the cosine schedule's last learning rate as a share of lr


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = "runs/drifting"
    seed: int = 0
    val_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 25
    early_stop_epochs: int = (
        0  # the original design's rule when > 0: stop when the loss fell < 1% over this many epochs
    )
    early_stop_min_improvement: float = 0.01
    workers: int = 0  # data-loader workers (0 keeps them off /dev/shm, which is 128 MB in the template)
    threads: int = 0  # torch CPU threads (0: torch's default)
    init_from: str = ""  # start from these weights (checkpoint .pt or exported .onnx; training/initial_weights.py)
    # ("{fold}" in it becomes the --fold number: a per-fold fine-tune starts from its own fold's model)
    max_train_seconds: float = 0.0  # > 0: stop (validate, save) once optimiser steps took this long (equal budgets)


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: DriftConfig = field(default_factory=DriftConfig)  # drifting loss + L1 weights (training/drifting.py)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    manifest: str = "model_weights/manifest.json"
    settings: dict[str, Any] = field(default_factory=dict)  # overrides of the manifest's defaults
    ldm: dict[str, Any] = field(default_factory=dict)  # model kinds ldm_*: training/ldm.py LdmConfig (validated there)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = {"data": DataConfig, "augment": AugmentConfig, "model": ModelConfig, "optim": OptimConfig, "run": RunConfig}


def _augment_keys_from_data(data: dict[str, Any], where: str) -> dict[str, Any]:
    """`data` with the augmentation keys that older configs and checkpoints keep under [data] moved to [augment]."""
    moved = {
        key: value for key, value in data.get("data", {}).items() if key in {f.name for f in fields(AugmentConfig)}
    }
    if not moved:
        return data
    both = sorted(set(moved) & set(data.get("augment", {})))
    if both:
        raise ValueError(f"{where}: {both} given under both [data] (the old place) and [augment]; keep [augment]")
    data_section = {key: value for key, value in data["data"].items() if key not in moved}
    return {**data, "data": data_section, "augment": {**data.get("augment", {}), **moved}}


def _coerce(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    converted = {}
    for key, value in values.items():
        default = getattr(cls(), key)
        converted[key] = tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
    return cls(**converted)


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    data = _augment_keys_from_data(data, where)
    unknown = sorted(set(data) - set(_SECTIONS) - {"loss", "manifest", "settings", "ldm"})
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {unknown}")
    sections = {name: data.get(name, {}) for name in _SECTIONS}
    sections["model"] = resolve_preset(sections["model"], f"{where} [model]")
    parts = {name: _coerce(cls, sections[name], f"{where} [{name}]") for name, cls in _SECTIONS.items()}
    try:
        loss = DriftConfig.from_dict(data.get("loss", {}))
    except ValueError as err:
        raise ValueError(f"{where} [loss]: {err}") from err
    return TrainConfig(
        **parts,
        loss=loss,
        manifest=data.get("manifest", "model_weights/manifest.json"),
        settings=dict(data.get("settings", {})),
        ldm=dict(data.get("ldm", {})),
    )


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` on top of `base`, section by section (a key set in both takes the overlay's value)."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: Path | str | list[Path | str] | tuple[Path | str, ...] | None, overrides: list[str] = ()
) -> TrainConfig:
    """Read TOML configs (or the defaults) and apply `section.key=value` overrides (values parsed as JSON).

    Several paths layer left to right: a recipe first, then small overlays such as a region group
    (`configs/regions/HN.toml`), so one recipe serves every group without being copied.
    """
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    data: dict[str, Any] = {}
    for item in paths:
        with open(item, "rb") as handle:
            data = _merge(data, tomllib.load(handle))
    for item in overrides:
        key, _, raw = item.partition("=")
        if not raw:
            raise ValueError(f"--set {item!r}: expected section.key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *sections, leaf = key.split(".")
        target = data
        for section in sections:
            target = target.setdefault(section, {})
        target[leaf] = value
    return config_from_dict(data, " + ".join(str(item) for item in paths) or "defaults")
