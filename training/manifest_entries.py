"""Manifest entries made from other entries, without torch: ensembles, float16 copies, and the safe write.

`training.export` adds entries from checkpoints; these helpers add entries derived from entries already in a
manifest (so they also run on an inference or GPU-check machine without torch). Every write validates the new
manifest before it replaces the old one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.manifest import SETTING_KEYS, load_manifest, read_manifest_json, sha256_of
from engine.regions import canonical_region
from training.errors import TrainingError

LOG = logging.getLogger("training.manifest_entries")


def add_ensemble(
    manifest_path: Path,
    name: str,
    members: list[str],
    regions: list[str],
    role: str = "primary",
    flip_tta: bool = False,
    description: str = "",
) -> dict[str, Any]:
    """Add (or replace) an ensemble entry averaging existing entries (e.g. the fold models); returns the entry.

    It takes its shared settings from the first member; the manifest check refuses members that disagree."""
    data = read_manifest_json(manifest_path)
    missing = [m for m in members if m not in data.get("models", {})]
    if missing:
        raise TrainingError(f"{manifest_path}: ensemble member(s) {missing} are not model entries")
    first = data["models"][members[0]]
    shared = {key: first[key] for key in sorted(SETTING_KEYS - {"sampler"}) if key in first}
    entry = {"kind": "ensemble", "description": description, "members": list(members), **shared}
    if flip_tta:
        entry["flip_tta"] = True
    add_entry(manifest_path, name, entry, regions, role)
    return entry


#: fp16 weights must stay within this mean |difference| from their fp32 source (HU), as the GPU target says.
FP16_MEAN_TOLERANCE_HU = 2.0


def onnx_difference_hu(reference: Path, candidate: Path, context: int, window: tuple[float, float], seed: int = 0):
    """(max, mean) |candidate - reference| in HU of two ONNX generators on a seeded random input (CPU)."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    mr = rng.standard_normal((3, context, 96, 80), dtype=np.float32)
    outputs = []
    for path in (reference, candidate):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {"mr": mr}
        for item in session.get_inputs():
            if item.name == "noise":
                feeds["noise"] = np.zeros(
                    (3, int(item.shape[1]) if isinstance(item.shape[1], int) else 1, 96, 80), np.float32
                )
        outputs.append(session.run(None, feeds)[0])
    difference = np.abs(outputs[1].astype(np.float64) - outputs[0]) * (window[1] - window[0]) / 2.0
    return float(difference.max()), float(difference.mean())


def add_fp16(manifest_path: Path, source: str, name: str, regions: list[str], role: str = "primary") -> dict[str, Any]:
    """A half-precision copy of the one-step generator `source` as entry `name` (<name>.onnx beside the manifest).

    Weights and activations in float16, inputs and outputs kept float32 (the pipeline's contract), so a GPU's
    tensor cores can run it. Refused when its mean difference from the fp32 file exceeds FP16_MEAN_TOLERANCE_HU."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    manifest = load_manifest(manifest_path)
    spec = manifest.models.get(source)
    if spec is None or spec.kind != "one_step":
        raise TrainingError(
            f"{manifest_path}: --fp16-of needs a one-step generator entry (kind one_step), got {source!r}"
        )
    spec.verify_files()
    target = manifest_path.parent / f"{name}.onnx"
    if target.resolve() == spec.file("generator").resolve():
        raise TrainingError(f"{target}: the fp16 copy must not overwrite its source")
    temporary = target.with_suffix(".onnx.tmp")
    onnx.save(convert_float_to_float16(onnx.load(str(spec.file("generator"))), keep_io_types=True), str(temporary))
    worst, mean = onnx_difference_hu(spec.file("generator"), temporary, spec.context_slices, spec.ct_window_hu)
    LOG.info("fp16 vs fp32 ONNX: max |difference| %.2f HU, mean %.3f HU", worst, mean)
    if mean > FP16_MEAN_TOLERANCE_HU:
        temporary.unlink()
        raise TrainingError(
            f"{target}: fp16 copy differs from {source} by {mean:.2f} HU on average (> {FP16_MEAN_TOLERANCE_HU})"
        )
    os.replace(temporary, target)
    entry = dict(read_manifest_json(manifest_path)["models"][source])
    entry["description"] = f"{source} in float16 (weights and activations; float32 inputs and outputs)"
    entry["files"] = {"generator": {"path": target.name, "sha256": sha256_of(target)}}
    entry["provenance"] = {
        **entry.get("provenance", {}),
        "fp16_of": source,
        "fp16_difference_hu": {"max": round(worst, 3), "mean": round(mean, 4)},
    }
    add_entry(manifest_path, name, entry, regions, role)
    return entry


def copy_manifest(source: Path, out: Path) -> Path:
    """An evaluation manifest at `out`: `source` with every file named by absolute path (the shipped files stay
    where they are; entries added to `out` later put their files beside it). Returns `out`."""
    data = read_manifest_json(source)
    for entry in data["models"].values():
        for item in (entry.get("files") or {}).values():
            item["path"] = str((Path(source).parent / item["path"]).resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


def add_entry(manifest_path: Path, name: str, entry: dict[str, Any], regions: list[str], role: str) -> None:
    """Put `entry` in the manifest and route `regions` to it; the new file is validated before it replaces the old."""
    data = read_manifest_json(manifest_path)
    data["models"][name] = entry
    for region in regions:
        code = canonical_region(region)
        route = data["regions"].setdefault(code, {"model": name, "fallback": None})
        route["model" if role == "primary" else "fallback"] = name
    temporary = manifest_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    try:
        load_manifest(temporary)  # validate the new file (same folder: same relative paths) before it replaces the old
    except Exception:
        temporary.unlink()
        raise
    os.replace(temporary, manifest_path)
