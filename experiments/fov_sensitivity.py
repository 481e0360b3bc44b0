"""Does the generator's output depend on how much air surrounds the body? (GroupNorm statistics are per slice.)

    python experiments/fov_sensitivity.py --checkpoint runs/cmp/pixel/best.pt --pad 0,64,128

The network trains on 128 x 128 crops centred on the body, but at inference it sees whole padded slices, with
far more air; GroupNorm normalises each sample over its whole field of view, so the statistics differ. This
scores the validation split (never the test split) with every slice padded by P extra pixels of the MR's outside
value on each side (the sCT is cropped back before scoring): if the MAE moves with P, the field of view matters.
Measures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.manifest import build_spec  # noqa: E402
from evaluation.metrics import score_case  # noqa: E402
from postprocessing import finalise_hu, to_input_grid  # noqa: E402
from training.config import config_from_dict  # noqa: E402
from training.dataset import find_cases, load_volume  # noqa: E402
from training.export import load_checkpoint_model  # noqa: E402
from training.train import load_reference, predict_volume, training_cases  # noqa: E402

LOG = logging.getLogger("fov_sensitivity")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--pad", default="0,64,128", help="extra pixels of air on every side of each slice")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    model, checkpoint = load_checkpoint_model(args.checkpoint)
    config = config_from_dict(checkpoint["config"], str(args.checkpoint))
    spec = build_spec("fov", {"kind": "one_step", **checkpoint["settings"]}, {}, Path("."), require_files=False)
    _, val_cases = training_cases(find_cases(Path(config.data.root), list(config.data.regions)), config)
    volumes = [load_volume(d, r, spec) for d, r in val_cases]
    references = [load_reference(v) for v in volumes]
    report = {"checkpoint": str(args.checkpoint), "cases": [v.case_id for v in volumes], "pads": {}}
    for pad in [int(p) for p in args.pad.split(",") if p]:
        maes = []
        for volume, reference in zip(volumes, references):
            mr = np.pad(volume.mr, ((0, 0), (pad, pad), (pad, pad)), constant_values=spec.normalisation.outside_value)
            pred = predict_volume(model, mr, spec, torch.device("cpu"), config.model.noise_channels)
            pred = pred[:, pad : pred.shape[1] - pad, pad : pred.shape[2] - pad]
            sct = finalise_hu(to_input_grid(pred, volume.prepared, spec.ct_window_hu), reference.mask, spec)
            maes.append(float(score_case(reference.ct, sct, reference.mask)["mae"]))
        report["pads"][pad] = {"val_mae": float(np.mean(maes)), "per_case": maes}
        LOG.info("pad %d: validation MAE %.1f HU", pad, np.mean(maes))
    print(json.dumps({p: round(v["val_mae"], 2) for p, v in report["pads"].items()}))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
