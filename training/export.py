"""Turn a training checkpoint into an ONNX file plus its manifest entry (and optionally route regions to it).

    python -m training.export --checkpoint runs/drifting/best.pt --name drifting --regions HN,TH,AB

The entry carries the sha256, every shared setting the model was trained with (read from the checkpoint, so
inference normalises exactly as training did), the training command and the validation scores.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.manifest import DEFAULT_MANIFEST, ManifestError, sha256_of
from training.config import config_from_dict
from training.errors import TrainingError
from training.manifest_entries import add_ensemble, add_entry, add_fp16
from training.train import LDM_KINDS, build_network

LOG = logging.getLogger("training.export")


def load_checkpoint_model(checkpoint_path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The EMA network of a checkpoint, in eval mode, and the checkpoint's metadata."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    config = config_from_dict(checkpoint["config"], str(checkpoint_path))
    from engine.manifest import build_spec

    spec = build_spec("export", {"kind": "drifting", **checkpoint["settings"]}, {}, Path("."), require_files=False)
    model = build_network(config, spec)
    model.load_state_dict(checkpoint["ema"])
    model.eval()
    return model, checkpoint


def parity_error_hu(
    model: torch.nn.Module,
    onnx_path: Path,
    context: int,
    noise_channels: int,
    window: tuple[float, float],
    seed: int = 0,
) -> float:
    """Largest |ONNX Runtime - PyTorch| in HU on a seeded random input of an odd batch and size."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    stride = int(getattr(model, "stride", 16))  # an odd batch and a size other than the export's 64 x 64
    height, width = (stride * -(-size // stride) for size in (96, 80))
    mr = rng.standard_normal((3, context, height, width), dtype=np.float32)
    noise = rng.standard_normal((3, noise_channels, height, width), dtype=np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(mr), torch.from_numpy(noise)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"mr": mr}
    if any(item.name == "noise" for item in session.get_inputs()):
        feeds["noise"] = noise
    (output,) = session.run(None, feeds)
    return float(np.abs(output - reference).max() * (window[1] - window[0]) / 2.0)


def export(
    checkpoint_path: Path,
    name: str,
    manifest_path: Path,
    regions: list[str],
    role: str,
    description: str,
    extra_provenance: dict[str, Any] | None = None,
    flip_tta: bool = False,
) -> dict[str, Any]:
    """Write `<name>.onnx` beside the manifest and add (or replace) the manifest entry; returns the entry."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    if checkpoint["config"]["model"]["kind"] in LDM_KINDS:  # the latent-diffusion fallback: three files
        from training.ldm import export_ldm

        paths, settings, kind_provenance = export_ldm(checkpoint, checkpoint_path, manifest_path.parent, name)
        kind, config = "ldm", checkpoint["config"]
    else:
        from training.networks import PARITY_TOLERANCE, export_onnx

        model, checkpoint = load_checkpoint_model(checkpoint_path)
        settings = checkpoint["settings"]
        config = checkpoint["config"]
        onnx_path = manifest_path.parent / f"{name}.onnx"
        export_onnx(
            model,
            onnx_path,
            context_slices=settings["context_slices"],
            noise_channels=config["model"]["noise_channels"],
        )
        error = parity_error_hu(
            model,
            onnx_path,
            settings["context_slices"],
            config["model"]["noise_channels"],
            tuple(settings["ct_window_hu"]),
        )
        LOG.info("ONNX Runtime vs PyTorch: max |difference| %.2e HU", error)
        if error > PARITY_TOLERANCE * (settings["ct_window_hu"][1] - settings["ct_window_hu"][0]) / 2.0:
            raise TrainingError(f"{onnx_path}: ONNX export disagrees with PyTorch by {error:.3g} HU")
        paths, kind = {"generator": onnx_path}, "drifting"
        kind_provenance = {"loss": config["loss"], "onnx_parity_max_abs_hu": error}
    entry = {
        "kind": kind,
        "description": description,
        "files": {role_: {"path": path.name, "sha256": sha256_of(path)} for role_, path in paths.items()},
        **settings,
        "provenance": {
            "training_command": checkpoint.get("command", ""),
            "model": config["model"],
            **kind_provenance,
            "steps": checkpoint["state"]["step"],
            "best_step": checkpoint["state"]["best_step"],
            "validation": {
                k: round(v, 4)
                for k, v in checkpoint.get("scores", {}).items()
                if isinstance(v, float) and k.startswith("val_")
            },
            **({"weight_average": checkpoint["weight_average"]} if "weight_average" in checkpoint else {}),
            **(extra_provenance or {}),
        },
    }
    if flip_tta:
        entry["flip_tta"] = True
    add_entry(manifest_path, name, entry, regions, role)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="best.pt or last.pt of a training run")
    source.add_argument(
        "--fp16-of",
        metavar="NAME",
        help="instead of a checkpoint: a float16 copy of this one-step generator entry (parity checked in HU)",
    )
    source.add_argument(
        "--ensemble-of",
        metavar="NAME,NAME,...",
        help="instead of a checkpoint: add an ensemble entry that averages these existing entries (e.g. fold models)",
    )
    parser.add_argument("--name", required=True, help="manifest entry name; the ONNX file is <name>.onnx")
    parser.add_argument(
        "--flip-tta",
        action="store_true",
        help="the entry averages each prediction with its left-right mirrored one (test-time augmentation)",
    )
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="manifest to update (%(default)s)")
    parser.add_argument("--regions", default="", help="comma-separated regions to route to this model")
    parser.add_argument(
        "--role",
        choices=("primary", "fallback"),
        default="primary",
        help="route the regions' primary model or their fallback (default: primary)",
    )
    parser.add_argument("--description", default="", help="free text for the manifest entry")
    parser.add_argument(
        "--provenance",
        type=json.loads,
        default=None,
        help="extra provenance as a JSON object (e.g. data seed, wall time)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    regions = [r for r in args.regions.split(",") if r.strip()]
    try:
        if args.fp16_of:
            entry = add_fp16(args.manifest.resolve(), args.fp16_of, args.name, regions, args.role)
            LOG.info("wrote %s (%s)", entry["files"]["generator"]["path"], entry["provenance"]["fp16_difference_hu"])
            return 0
        if args.ensemble_of:
            members = [m.strip() for m in args.ensemble_of.split(",") if m.strip()]
            add_ensemble(
                args.manifest.resolve(), args.name, members, regions, args.role, args.flip_tta, args.description
            )
            LOG.info("added ensemble %r of %s", args.name, ", ".join(members))
            return 0
        entry = export(
            args.checkpoint,
            args.name,
            args.manifest.resolve(),
            regions,
            args.role,
            args.description,
            args.provenance,
            args.flip_tta,
        )
    except (TrainingError, ManifestError) as err:
        LOG.error("%s", err)
        return 2
    for item in entry["files"].values():
        LOG.info("wrote %s (sha256 %s)", item["path"], item["sha256"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
