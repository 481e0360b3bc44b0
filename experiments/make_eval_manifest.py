"""An evaluation manifest: the shipped models plus fold models, their ensemble, flip-TTA variants, region models.

    python experiments/make_eval_manifest.py --out runs/kfold/eval/manifest.json \
        --fold runs/kfold/l1/fold_0/best.pt --fold runs/kfold/l1/fold_1/best.pt --fold runs/kfold/l1/fold_2/best.pt \
        --region HN=runs/kfold/region/HN/best.pt --region TH=... --region AB=...
    python benchmarks/compare_models.py --data data/phantoms_final --manifest runs/kfold/eval/manifest.json \
        --models l1,l1_tta,l1_fold0,l1_fold1,l1_fold2,l1_folds,l1_folds_tta,routes --out runs/kfold/compare

Entries written (the shipped ones keep their files, named by absolute path): `l1_fold<k>` per --fold checkpoint,
`l1_folds` (their ensemble), `l1_folds_tta` (the ensemble with flip TTA), `l1_tta` (the shipped l1 with flip TTA)
and `l1_<REGION>` per --region checkpoint, with the manifest's region routes pointing at those (compare them with
`--models routes`), and one entry per `--extra NAME=checkpoint` (with `--tta`, also `NAME_tta`: the same network
with flip TTA). The shipped manifest is never touched.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.manifest import DEFAULT_MANIFEST, read_manifest_json  # noqa: E402
from engine.regions import canonical_region  # noqa: E402
from training.export import export  # noqa: E402
from training.manifest_entries import add_ensemble, add_entry, copy_manifest  # noqa: E402

LOG = logging.getLogger("make_eval_manifest")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, required=True, help="the evaluation manifest to write (its folder holds the new ONNX files)"
    )
    parser.add_argument("--fold", type=Path, action="append", default=[], help="a fold's checkpoint, in fold order")
    parser.add_argument("--region", action="append", default=[], help="REGION=checkpoint of a region-specific model")
    parser.add_argument("--extra", action="append", default=[], help="NAME=checkpoint of any other model to compare")
    parser.add_argument("--tta", action="store_true", help="also write NAME_tta (flip TTA) for every --extra")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    manifest = copy_manifest(DEFAULT_MANIFEST, args.out.resolve())
    data = read_manifest_json(manifest)
    add_entry(manifest, "l1_tta", {**data["models"]["l1"], "flip_tta": True}, [], "primary")
    folds = []
    for index, checkpoint in enumerate(args.fold):
        name = f"l1_fold{index}"
        export(checkpoint, name, manifest, [], "primary", f"fold {index} of the cross-validation")
        folds.append(name)
    if len(folds) >= 2:
        add_ensemble(manifest, "l1_folds", folds, [], description="mean of the fold models")
        add_ensemble(manifest, "l1_folds_tta", folds, [], flip_tta=True, description="fold ensemble, flip TTA")
    for item in args.region:
        region, _, checkpoint = item.partition("=")
        code = canonical_region(region)
        export(Path(checkpoint), f"l1_{code}", manifest, [code], "primary", f"trained on {code} only")
    for item in args.extra:
        name, _, checkpoint = item.partition("=")
        export(Path(checkpoint), name, manifest, [], "primary", f"from {checkpoint}")
        if args.tta:
            entry = read_manifest_json(manifest)["models"][name]
            add_entry(manifest, f"{name}_tta", {**entry, "flip_tta": True}, [], "primary")
    LOG.info("wrote %s: %s", manifest, ", ".join(read_manifest_json(manifest)["models"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
