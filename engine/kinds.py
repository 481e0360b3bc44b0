"""The model kinds, named by the inference graph that runs, in one registry: what files each needs and how it is built.

A manifest entry's `kind` says what runs at inference, not how the weights were trained:

- `water`: 0 HU everywhere, no network (the floor every model must beat).
- `one_step`: one network call per slice stack (`generator` file). The shipped L1 and drifting generators are both
  this kind; the training objective is provenance (`provenance.model.kind`: `l1` or `drifting`).
- `latent_diffusion`: MR condition -> DDIM in a latent space -> decoded CT slice (`encoder`, `denoiser`, `decoder`).
- `ensemble`: the mean of member entries (`members`), each of any other kind.

Manifests written before the kinds were renamed say `drifting` (now `one_step`) and `ldm` (now `latent_diffusion`);
`kind_name` reads both, and so does `--model`. A new kind is one `Kind` row here: the manifest validation and the
generator loader both read this table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from engine.base import Generator, GeneratorError
from engine.ensemble import EnsembleGenerator, FlipGenerator
from engine.generators import OnnxSliceGenerator, WaterGenerator
from engine.ldm_sampler import LatentDiffusionGenerator
from modelspec import ModelSpec

#: Builds a verified spec's generator on a device; the third argument builds other specs (an ensemble's members).
Builder = Callable[[ModelSpec, str, Callable[[ModelSpec, str], Generator]], Generator]


def _ensemble(spec: ModelSpec, device: str, build: Callable[[ModelSpec, str], Generator]) -> Generator:
    # the ensemble's sampler (its own, or its region's, e.g. ddim_steps) applies to every member
    members = [build(dataclasses.replace(m, sampler={**m.sampler, **spec.sampler}), device) for m in spec.members]
    return EnsembleGenerator(spec, members)


@dataclass(frozen=True)
class Kind:
    """One model kind: its name, the ONNX file roles an entry of it names, and how its generator is built."""

    name: str
    summary: str
    files: tuple[str, ...]
    build: Builder
    former_names: tuple[str, ...] = ()  # what older manifests call it
    has_members: bool = False  # an ensemble: names other entries instead of files


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("water", "0 HU everywhere (no files)", (), lambda spec, device, _: WaterGenerator(spec, device)),
        Kind(
            "one_step",
            "one network call per slice stack",
            ("generator",),
            lambda spec, device, _: OnnxSliceGenerator(spec, device),
            former_names=("drifting",),
        ),
        Kind(
            "latent_diffusion",
            "DDIM in a latent space, decoded",
            ("encoder", "decoder", "denoiser"),
            lambda spec, device, _: LatentDiffusionGenerator(spec, device),
            former_names=("ldm",),
        ),
        Kind("ensemble", "the mean of member entries", (), _ensemble, has_members=True),
    )
}


def kind_name(value: object) -> str | None:
    """The current name of a kind given by its current or a former name (`drifting` -> `one_step`), else None."""
    if not isinstance(value, str):
        return None
    if value in KINDS:
        return value
    return next((kind.name for kind in KINDS.values() if value in kind.former_names), None)


def kind_names() -> str:
    """The kinds for messages and --help: 'water, one_step (formerly drifting), ...'."""
    return ", ".join(
        kind.name + (f" (formerly {', '.join(kind.former_names)})" if kind.former_names else "")
        for kind in KINDS.values()
    )


def load_generator(spec: ModelSpec, device: str = "auto") -> Generator:
    """Verify the model's files (an ensemble's: every member's), then build its generator.

    Raises ManifestError/GeneratorError/DeviceError."""
    spec.verify_files()
    return _build(spec, device)


def _build(spec: ModelSpec, device: str) -> Generator:
    """The generator of a verified spec, wrapped for flip test-time augmentation when the entry asks for it."""
    kind = KINDS.get(spec.kind)
    if kind is None:
        raise GeneratorError(f"model {spec.name!r}: no generator for kind {spec.kind!r}")
    generator = kind.build(spec, device, _build)
    return FlipGenerator(generator) if spec.flip_tta else generator
