"""A small frozen CT tissue network and the anatomy-aware loss on its multi-scale features.

Why: the best SynthRAD2025 Task 1 entries added to their L1 a loss computed in the features of a network that knows
anatomy (1st place: a "masked anatomical perception" loss from a segmentation network trained on the same data).
The release has no labels, so this network learns tissue classes that CT numbers define on their own:

    air < -850 HU <= lung < -350 HU <= fat < -30 HU <= soft tissue < 200 HU <= bone

(`TISSUES`, `TISSUE_EDGES_HU`). It is trained on the training split's CT slices alone (never on MR, never on a
validation or test case), with the input degraded by random noise and blur and randomly flipped (the labels come from
the clean CT), so its features describe tissue and its boundaries rather than one scanner's texture. Frozen, its
encoder features at four scales (full, 1/2, 1/4, 1/8 resolution) compare a synthetic CT with the real one:

    L_anatomy = mean over levels l of  sum_body |f_l(sCT) - f_l(CT)| / (channels x body pixels at l) / s_l

where s_l is the mean |f_l(CT)| over body pixels of training crops (stored with the network), so every level weighs
alike and the loss is in "share of a typical feature" units. It is zero when sCT = CT, and a bone that sits 2 mm
off costs more than one 1 mm off (both tested). Gradients flow through the frozen network into the sCT only.

    python -m training.anatomy --config configs/drifting.toml --out runs/anatomy/phantoms.pt     # train it
    [loss] lambda_anatomy = 1.0, anatomy_checkpoint = "runs/anatomy/phantoms.pt"                # use it

The same network is a feature space for the drifting loss (`[loss] encoder = "anatomy"`, training/features.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from training.errors import TrainingError
from training.tissue_net import (  # noqa: F401  (the names this module always had)
    DEFAULT_WIDTHS,
    LOG,
    TISSUE_EDGES_HU,
    TISSUES,
    AnatomyLoss,
    TissueNet,
    load_tissue_net,
    tissue_classes,
    train_tissue_net,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.anatomy",
        description="Train the frozen CT tissue network of the anatomy-aware loss on the training split's CT alone "
        "(classes from CT numbers: air, lung, fat, soft tissue, bone). The data, regions, split (and fold), cache "
        "and HU window are the generator config's, so it sees exactly the CTs the generator trains on.",
    )
    parser.add_argument("--config", type=Path, action="append", required=True, help="the generator's TOML config(s)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value")
    parser.add_argument("--fold", type=int, help="cross-validation fold K of data.split (its training cases)")
    parser.add_argument("--out", type=Path, help="checkpoint to write (default: the config's loss.anatomy_checkpoint)")
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="CT crops per step (default %(default)s)")
    parser.add_argument("--crop", type=int, default=64, help="crop size in pixels (default %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the config's run.threads)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )

    from engine.manifest import training_spec
    from training.config import load_config
    from training.splits import SplitError
    from training.train import load_training_volumes, with_fold

    try:
        config = load_config(args.config, args.set)
        if args.fold is not None:
            config = with_fold(config, args.fold)
    except ValueError as err:
        parser.error(str(err))
    out = args.out or (Path(config.loss.anatomy_checkpoint) if config.loss.anatomy_checkpoint else None)
    if out is None:
        parser.error("--out is needed when the config names no loss.anatomy_checkpoint")
    threads = args.threads or config.run.threads
    if threads:
        torch.set_num_threads(threads)
    command = " ".join(["python -m training.anatomy"] + (argv if argv is not None else sys.argv[1:]))
    try:
        spec = training_spec(config.manifest, "drifting", config.settings)
        train_volumes, val_volumes = load_training_volumes(config, spec)
        train_tissue_net(
            train_volumes,
            val_volumes,
            spec.ct_window_hu,
            out,
            steps=args.steps,
            batch_size=args.batch_size,
            crop=args.crop,
            seed=args.seed,
            command=command,
        )
    except (TrainingError, SplitError) as err:
        LOG.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
