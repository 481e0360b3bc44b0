"""The model manifest: one validated source of every setting that training and inference share.

`model_weights/manifest.json` holds a `defaults` block, named `models` (each states only what differs from the
defaults, as nnU-Net plans do) and a `regions` table that names each region's primary model and its fallback.
It is data, read by the inference pipeline and by the trainer alike, so the two cannot drift apart.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.kinds import KINDS, kind_name, kind_names
from engine.regions import RegionError, canonical_region, region_name
from modelspec import (  # noqa: F401  (re-exported: the manifest's API)
    HU_MAX,
    HU_MIN,
    ManifestError,
    ModelFile,
    ModelSpec,
    Normalisation,
    sha256_of,
)

LOG = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "model_weights" / "manifest.json"

NORMALISATION_METHODS = ("zscore", "minmax")
OUTPUT_DTYPES = ("int16", "float32")

#: The settings a model entry (or the defaults) may state: what training and inference share.
SETTING_KEYS = {
    "spacing_xy_mm",
    "context_slices",
    "divisible_by",
    "mr_normalisation",
    "ct_window_hu",
    "output_dtype",
    "outside_fill_hu",
    "sampler",
}
_MODEL_KEYS = SETTING_KEYS | {"kind", "files", "description", "provenance", "flip_tta", "members"}
#: What an ensemble's members must share with it: one preprocessing feeds them all, one HU window reads them.
_ENSEMBLE_SHARED = ("spacing_xy_mm", "context_slices", "divisible_by", "normalisation", "ct_window_hu")
_NORMALISATION_KEYS = {"clip_percentiles", "method", "outside_value", "landmarks"}
_NORM_DEFAULT = Normalisation()  # the one definition of the normalisation defaults (modelspec)
_SAMPLER_KEYS = {"seed", "noise_channels", "ddim_steps", "train_timesteps", "latent_scale"}
#: What a region may set for the models it runs (how they sample, never what they were trained with): key -> minimum.
_REGION_SAMPLER_MINIMUM = {"seed": 0, "ddim_steps": 1}


@dataclass(frozen=True)
class RegionRoute:
    """The models a region runs: a primary and an optional fallback, both with the region's sampler settings."""

    primary: ModelSpec
    fallback: ModelSpec | None
    sampler: dict[str, Any] = field(default_factory=dict)

    def apply(self, spec: ModelSpec) -> ModelSpec:
        """`spec` (e.g. a forced model) with this region's sampler settings."""
        return with_sampler(spec, self.sampler)


def with_sampler(spec: ModelSpec, sampler: dict[str, Any]) -> ModelSpec:
    """`spec` with a region's sampler settings (e.g. its own `ddim_steps`) laid over the model's."""
    return dataclasses.replace(spec, sampler={**spec.sampler, **sampler}) if sampler else spec


@dataclass(frozen=True)
class Manifest:
    """The whole validated manifest."""

    path: Path
    models: dict[str, ModelSpec]
    routes: dict[str, RegionRoute]

    def route(self, region: str) -> RegionRoute:
        """The route of a region given in any accepted spelling."""
        code = canonical_region(region)
        if code not in self.routes:
            raise ManifestError(f"{self.path}: no model for region {region_name(code)!r} ({code})")
        return self.routes[code]

    def resolve(self, region: str, override: str | None = None) -> RegionRoute:
        """The route for a region, honouring `--model` (a model entry name or a model kind).

        A kind (engine/kinds.py; a former name such as `drifting` reads as today's) picks the region's own primary
        or fallback of that kind, else the only manifest entry of that kind; `water` needs no files and is always
        available. A forced model gets no fallback.
        """
        route = self.route(region)
        if override is None:
            return route
        if override in self.models:
            return RegionRoute(route.apply(self.models[override]), None, route.sampler)
        kind = kind_name(override)
        if kind is None:
            raise ManifestError(
                f"--model {override!r} is neither a manifest entry ({', '.join(sorted(self.models))}) "
                f"nor a model kind ({kind_names()})"
            )
        for spec in (route.primary, route.fallback):
            if spec is not None and spec.kind == kind:
                return RegionRoute(spec, None, route.sampler)
        of_kind = [spec for spec in self.models.values() if spec.kind == kind]
        if len(of_kind) == 1 or (of_kind and kind == "water"):
            return RegionRoute(route.apply(of_kind[0]), None, route.sampler)
        if kind == "water":
            return RegionRoute(build_spec("water", {"kind": "water"}, {}, self.path.parent), None)
        raise ManifestError(f"{self.path}: no {override!r} model for region {region!r}")


def _check_keys(where: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _merge(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults with overrides applied; nested dicts (normalisation, sampler) merge one level deep."""
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _number_pair(where: str, value: Any) -> tuple[float, float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ManifestError(f"{where}: expected a list of two numbers, got {value!r}")
    return float(value[0]), float(value[1])


def _model_files(where: str, kind: str, settings: dict[str, Any], weights_dir: Path, require_files: bool):
    """The entry's file roles: every role its kind needs (when required), each with a path and a well-formed sha256."""
    files_entry = settings.get("files", {}) or {}
    if not isinstance(files_entry, dict):
        raise ManifestError(f"{where}: 'files' must map a role to {{'path', 'sha256'}}")
    missing_roles = [role for role in KINDS[kind].files if role not in files_entry]
    if missing_roles and require_files:
        raise ManifestError(f"{where}: kind {kind!r} needs file role(s) {missing_roles}")
    files = []
    for role, item in files_entry.items():
        if not isinstance(item, dict) or set(item) != {"path", "sha256"}:
            raise ManifestError(f"{where}: file {role!r} must be an object with exactly 'path' and 'sha256'")
        digest = str(item["sha256"]).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ManifestError(f"{where}: file {role!r} has a malformed sha256 {item['sha256']!r}")
        files.append(ModelFile(role, (weights_dir / str(item["path"])).resolve(), digest))
    return tuple(files)


def _grid(where: str, settings: dict[str, Any]) -> tuple[tuple[float, float] | None, int, int]:
    """The network's grid: in-plane spacing (None: keep the input's), odd context slices, divisibility."""
    spacing = settings.get("spacing_xy_mm")
    if spacing is not None:
        spacing = _number_pair(f"{where}: spacing_xy_mm", spacing)
        if min(spacing) <= 0:
            raise ManifestError(f"{where}: spacing_xy_mm must be positive, got {list(spacing)}")
    context = settings.get("context_slices", 1)
    if not isinstance(context, int) or isinstance(context, bool) or context < 1 or context % 2 == 0:
        raise ManifestError(f"{where}: context_slices must be an odd positive integer, got {context!r}")
    divisible = settings.get("divisible_by", 1)
    if not isinstance(divisible, int) or isinstance(divisible, bool) or divisible < 1:
        raise ManifestError(f"{where}: divisible_by must be a positive integer, got {divisible!r}")
    return spacing, context, divisible


def _normalisation(where: str, settings: dict[str, Any]) -> Normalisation:
    """The MR normalisation the model was trained with (defaults from modelspec)."""
    norm_entry = settings.get("mr_normalisation", {}) or {}
    if not isinstance(norm_entry, dict):
        raise ManifestError(f"{where}: mr_normalisation must be an object")
    _check_keys(f"{where}: mr_normalisation", norm_entry, _NORMALISATION_KEYS)
    low_pct, high_pct = _number_pair(
        f"{where}: clip_percentiles", norm_entry.get("clip_percentiles", list(_NORM_DEFAULT.clip_percentiles))
    )
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ManifestError(f"{where}: clip_percentiles must satisfy 0 <= low < high <= 100, got {[low_pct, high_pct]}")
    method = norm_entry.get("method", _NORM_DEFAULT.method)
    if method not in NORMALISATION_METHODS:
        raise ManifestError(f"{where}: normalisation method {method!r} is not one of {list(NORMALISATION_METHODS)}")
    outside_value = norm_entry.get("outside_value", _NORM_DEFAULT.outside_value)
    if not isinstance(outside_value, (int, float)) or isinstance(outside_value, bool):
        raise ManifestError(f"{where}: outside_value must be a number")
    landmarks = _landmarks(f"{where}: mr_normalisation.landmarks", norm_entry.get("landmarks", []))
    return Normalisation((low_pct, high_pct), method, float(outside_value), landmarks)


def _landmarks(where: str, value: Any) -> tuple[tuple[float, float], ...]:
    """Histogram landmarks: [] (off) or at least two [percentile, value] pairs, both strictly increasing."""
    if not isinstance(value, (list, tuple)):
        raise ManifestError(f"{where}: expected a list of [percentile, value] pairs, got {value!r}")
    if not value:
        return ()
    pairs = tuple(_number_pair(f"{where}[{index}]", pair) for index, pair in enumerate(value))
    percentiles, values = [p for p, _ in pairs], [v for _, v in pairs]
    if len(pairs) < 2 or not all(0.0 <= p <= 100.0 for p in percentiles):
        raise ManifestError(f"{where}: needs at least two pairs with percentiles in [0, 100], got {list(value)}")
    if any(b <= a for a, b in zip(percentiles, percentiles[1:])) or any(b <= a for a, b in zip(values, values[1:])):
        raise ManifestError(f"{where}: percentiles and values must both be strictly increasing, got {list(value)}")
    return pairs


def _output(where: str, settings: dict[str, Any]) -> tuple[tuple[float, float], str, float, dict]:
    """What the sCT is made of: the HU window, the written dtype, the fill outside the body, the sampler."""
    window = _number_pair(f"{where}: ct_window_hu", settings.get("ct_window_hu", [HU_MIN, HU_MAX]))
    if window[0] >= window[1]:
        raise ManifestError(f"{where}: ct_window_hu must be [low, high] with low < high, got {list(window)}")
    dtype = settings.get("output_dtype", "int16")
    if dtype not in OUTPUT_DTYPES:
        raise ManifestError(f"{where}: output_dtype {dtype!r} is not one of {list(OUTPUT_DTYPES)}")
    fill = settings.get("outside_fill_hu", -1000.0)
    if not isinstance(fill, (int, float)) or isinstance(fill, bool) or not HU_MIN <= fill <= HU_MAX:
        raise ManifestError(f"{where}: outside_fill_hu must be a number in [{HU_MIN:g}, {HU_MAX:g}]")
    sampler = settings.get("sampler", {}) or {}
    if not isinstance(sampler, dict):
        raise ManifestError(f"{where}: sampler must be an object")
    _check_keys(f"{where}: sampler", sampler, _SAMPLER_KEYS)
    return window, dtype, float(fill), dict(sampler)


def build_spec(
    name: str, entry: dict[str, Any], defaults: dict[str, Any], weights_dir: Path, require_files: bool = True
) -> ModelSpec:
    """Validate one model entry merged over the defaults and turn it into a ModelSpec.

    `require_files=False` is for the trainer, which needs the settings of a model whose files do not exist yet.
    """
    where = f"model {name!r}"
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected an object")
    _check_keys(where, entry, _MODEL_KEYS)
    settings = _merge(defaults, entry)
    kind = kind_name(settings.get("kind"))  # a former name (drifting, ldm) reads as today's
    if kind is None:
        raise ManifestError(f"{where}: kind {settings.get('kind')!r} is not one of: {kind_names()}")
    if ("members" in entry) != KINDS[kind].has_members:
        raise ManifestError(f"{where}: 'members' is required for kind 'ensemble' and allowed for no other kind")
    if KINDS[kind].has_members and entry.get("files"):
        raise ManifestError(f"{where}: an ensemble has no files of its own (its members have)")
    flip_tta = entry.get("flip_tta", False)
    if not isinstance(flip_tta, bool):
        raise ManifestError(f"{where}: flip_tta must be true or false, got {flip_tta!r}")
    files = _model_files(where, kind, settings, weights_dir, require_files)
    spacing, context, divisible = _grid(where, settings)
    normalisation = _normalisation(where, settings)
    window, dtype, fill, sampler = _output(where, settings)
    return ModelSpec(
        name=name,
        kind=kind,
        files=files,
        spacing_xy_mm=spacing,
        context_slices=context,
        divisible_by=divisible,
        normalisation=normalisation,
        ct_window_hu=window,
        output_dtype=dtype,
        outside_fill_hu=fill,
        sampler=sampler,
        provenance=dict(settings.get("provenance", {}) or {}),
        flip_tta=flip_tta,
    )


def _with_members(name: str, spec: ModelSpec, entry: dict[str, Any], models: dict[str, ModelSpec]) -> ModelSpec:
    """An ensemble spec with its member specs: named entries, not ensembles, sharing its grid and HU window."""
    where = f"model {name!r}"
    names = entry["members"]
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise ManifestError(f"{where}: 'members' must list at least two model entry names, got {names!r}")
    if len(set(names)) != len(names):
        raise ManifestError(f"{where}: a member is listed twice in {names}")
    members = []
    for member_name in names:
        member = models.get(member_name)
        if member is None:
            raise ManifestError(f"{where}: member {member_name!r} is not a model entry")
        if KINDS[member.kind].has_members:
            raise ManifestError(f"{where}: member {member_name!r} is itself an ensemble (not supported)")
        for key in _ENSEMBLE_SHARED:
            if getattr(member, key) != getattr(spec, key):
                raise ManifestError(
                    f"{where}: member {member_name!r} has {key} {getattr(member, key)!r} but the ensemble has "
                    f"{getattr(spec, key)!r} (all members must share the preprocessing and the HU window)"
                )
        members.append(member)
    return dataclasses.replace(spec, members=tuple(members))


def parse_manifest(data: Any, path: Path) -> Manifest:
    """Validate manifest data (already parsed JSON); `path` locates the files it names and the error messages."""
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: the manifest must be a JSON object")
    _check_keys(str(path), data, {"schema_version", "description", "defaults", "models", "regions"})
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema_version must be {SCHEMA_VERSION}, got {data.get('schema_version')!r}")
    defaults = data.get("defaults", {}) or {}
    if not isinstance(defaults, dict):
        raise ManifestError(f"{path}: 'defaults' must be an object")
    _check_keys(f"{path}: defaults", defaults, SETTING_KEYS)
    models_entry = data.get("models")
    if not isinstance(models_entry, dict) or not models_entry:
        raise ManifestError(f"{path}: 'models' must be a non-empty object")
    try:
        models = {name: build_spec(name, entry, defaults, path.parent) for name, entry in models_entry.items()}
        for name, spec in list(models.items()):
            if KINDS[spec.kind].has_members:
                models[name] = _with_members(name, spec, models_entry[name], models)
    except ManifestError as err:
        raise ManifestError(f"{path}: {err}") from err

    regions_entry = data.get("regions")
    if not isinstance(regions_entry, dict) or not regions_entry:
        raise ManifestError(f"{path}: 'regions' must be a non-empty object")
    routes: dict[str, RegionRoute] = {}
    for region, route in regions_entry.items():
        try:
            code = canonical_region(region)
        except RegionError as err:
            raise ManifestError(f"{path}: regions: {err}") from err
        if not isinstance(route, dict):
            raise ManifestError(f"{path}: region {region!r} must be an object with 'model' (and 'fallback')")
        _check_keys(f"{path}: region {region!r}", route, {"model", "fallback", "sampler"})
        region_sampler = route.get("sampler", {}) or {}
        if not isinstance(region_sampler, dict):
            raise ManifestError(f"{path}: region {region!r} sampler must be an object")
        _check_keys(f"{path}: region {region!r} sampler", region_sampler, set(_REGION_SAMPLER_MINIMUM))
        for key, value in region_sampler.items():
            minimum = _REGION_SAMPLER_MINIMUM[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                word = "positive" if minimum == 1 else "non-negative"
                raise ManifestError(f"{path}: region {region!r} sampler {key} must be a {word} integer, got {value!r}")
        names = [route.get("model"), route.get("fallback")]
        for role, name in zip(("model", "fallback"), names):
            if name is not None and name not in models:
                raise ManifestError(f"{path}: region {region!r} {role} {name!r} is not a model entry")
        if names[0] is None:
            raise ManifestError(f"{path}: region {region!r} names no model")
        primary = with_sampler(models[names[0]], region_sampler)
        fallback = with_sampler(models[names[1]], region_sampler) if names[1] else None
        routes[code] = RegionRoute(primary, fallback, dict(region_sampler))
    return Manifest(path=path, models=models, routes=routes)


def read_manifest_json(path: Path | str) -> dict[str, Any]:
    """The manifest's raw JSON (for tools that edit it, like the exporter)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ManifestError(f"{path}: cannot read the manifest ({err.strerror or err})") from err
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from err


def training_spec(manifest_path: Path | str, kind: str, overrides: dict[str, Any]) -> ModelSpec:
    """Settings for a model about to be trained: the manifest's defaults with the config's overrides applied."""
    path = Path(manifest_path).resolve()
    defaults = read_manifest_json(path).get("defaults", {}) or {}
    return build_spec(f"training-{kind}", {"kind": kind, **overrides}, defaults, path.parent, require_files=False)


def load_manifest(path: Path | str = DEFAULT_MANIFEST) -> Manifest:
    """Read and validate the manifest; every problem is a one-line ManifestError naming the file."""
    path = Path(path).resolve()
    return parse_manifest(read_manifest_json(path), path)


#: Where grand-challenge extracts an algorithm's separately uploaded model tarball (read-only) for every job.
MODEL_TARBALL_DIR = Path("/opt/ml/model")


@dataclass(frozen=True)
class ManifestChoice:
    """The manifest a run uses, and (when a model tarball could not be used) why the baked-in one runs instead."""

    manifest: Manifest
    note: str | None = None


def check_tarball(path: Path) -> Manifest:
    """A model tarball's manifest, with every file it names present and matching its checksum.

    Files the manifest does not name are logged (a tarball should hold the manifest and its files, nothing else).
    """
    manifest = load_manifest(path)
    named = {path.resolve()}
    for spec in manifest.models.values():
        spec.verify_files()
        named.update(item.path.resolve() for item in spec.files)
    extra = sorted(
        str(p.relative_to(path.parent)) for p in path.parent.rglob("*") if p.is_file() and p.resolve() not in named
    )
    if extra:
        LOG.warning("%s: files the manifest does not name (ignored): %s", path.parent, ", ".join(extra[:10]))
    return manifest


def choose_manifest(
    explicit: Path | None, tarball_dir: Path = MODEL_TARBALL_DIR, baked: Path = DEFAULT_MANIFEST
) -> ManifestChoice:
    """--manifest when given; else a model tarball's manifest.json in tarball_dir; else the baked-in manifest.

    A tarball that cannot be used (bad manifest, missing file, checksum mismatch) is one error line, and the
    image's baked-in models run instead when the image has them (the note says so, for every case's record);
    without baked-in models the ManifestError stands.
    """
    if explicit is not None:
        return ManifestChoice(load_manifest(explicit))
    candidate = Path(tarball_dir) / "manifest.json"
    if not candidate.is_file():
        return ManifestChoice(load_manifest(baked))
    try:
        manifest = check_tarball(candidate)
    except ManifestError as err:
        if not Path(baked).is_file():
            raise
        note = f"model tarball {tarball_dir} unusable ({err}); the image's baked-in models ran instead"
        LOG.error("%s", note)
        return ManifestChoice(load_manifest(baked), note)
    LOG.info("models from the model tarball %s (replaces the baked-in manifest)", tarball_dir)
    return ManifestChoice(manifest)
