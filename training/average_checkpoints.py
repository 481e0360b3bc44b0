"""Average the weights of fine-tunes that share one starting point: one network, no extra inference cost.

    python -m training.average_checkpoints --out runs/soup/best.pt runs/thin_p30_cos/last.pt runs/thin_p40_cos/last.pt

Fine-tunes of the same initial weights usually stay in one basin of the loss, so the mean of their weights is a
network of its own that tends to land between (or beyond) its members on every score, with less of each member's
checkpoint noise (Wortsman et al. 2022, "model soups"). Averaging networks trained from different initial weights
gives nonsense, so the members must share the network's shape and settings, and each should name the same
`run.init_from` (a warning, not an error: a user may know better). Both the EMA weights (which export and
scoring use) and the raw weights are averaged; integer buffers must agree. The result exports with
`python -m training.export` like any checkpoint; it carries no optimiser state, so training cannot resume from
it (start a new run from it with `run.init_from`).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from training.errors import TrainingError
from training.ldm import LDM_KINDS

LOG = logging.getLogger("training.average_checkpoints")
WEIGHT_KEYS = ("ema", "model")


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingError(f"{path}: not a file")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in (*WEIGHT_KEYS, "config", "settings")):
        raise TrainingError(f"{path}: not a training checkpoint (needs 'ema', 'model', 'config' and 'settings')")
    if checkpoint["config"]["model"]["kind"] in LDM_KINDS:  # a fallback stage belongs to its own autoencoder
        raise TrainingError(f"{path}: only one-step generators average (model.kind drifting or l1)")
    return checkpoint


def _mean_state(states: list[dict[str, torch.Tensor]], weights: list[float], paths: list[Path], which: str):
    reference = states[0]
    averaged: OrderedDict[str, torch.Tensor] = OrderedDict()
    for path, state in zip(paths[1:], states[1:]):
        if state.keys() != reference.keys():
            raise TrainingError(f"{path}: its '{which}' weights name other tensors than {paths[0]}'s")
    for key, first in reference.items():
        tensors = [state[key] for state in states]
        for path, tensor in zip(paths[1:], tensors[1:]):
            if tensor.shape != first.shape or tensor.dtype != first.dtype:
                raise TrainingError(
                    f"{path}: '{which}' tensor {key} is {tuple(tensor.shape)}, not {tuple(first.shape)}"
                )
        if first.is_floating_point():
            total = sum(weight * tensor.double() for weight, tensor in zip(weights, tensors))
            averaged[key] = total.to(first.dtype)
        else:  # counters such as num_batches_tracked: nothing to average, but they must agree
            for path, tensor in zip(paths[1:], tensors[1:]):
                if not torch.equal(tensor, first):
                    raise TrainingError(f"{path}: integer tensor {key} differs from {paths[0]}'s")
            averaged[key] = first.clone()
    return averaged


def average_checkpoints(paths: list[Path], weights: list[float] | None = None) -> dict[str, Any]:
    """The weighted mean (default: equal weights) of the checkpoints' EMA and raw weights, as a checkpoint."""
    if len(paths) < 2:
        raise TrainingError("averaging needs at least two checkpoints")
    weights = [1.0 / len(paths)] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths) or any(w < 0 for w in weights) or not abs(sum(weights) - 1.0) < 1e-6:
        raise TrainingError(f"--weights must be {len(paths)} non-negative numbers that sum to 1, got {weights}")
    checkpoints = [_load(path) for path in paths]
    first = checkpoints[0]
    for path, checkpoint in zip(paths[1:], checkpoints[1:]):
        if checkpoint["config"]["model"] != first["config"]["model"]:
            raise TrainingError(f"{path}: another network ({checkpoint['config']['model']}) than {paths[0]}")
        if checkpoint["settings"] != first["settings"]:
            raise TrainingError(f"{path}: other shared settings (normalisation, spacing, window) than {paths[0]}")
    starts = {checkpoint["config"].get("run", {}).get("init_from", "") for checkpoint in checkpoints}
    if len(starts) != 1 or starts == {""}:
        LOG.warning("the members do not name one run.init_from (%s): averaging unrelated networks rarely works", starts)
    averaged = {
        which: _mean_state([checkpoint[which] for checkpoint in checkpoints], weights, paths, which)
        for which in WEIGHT_KEYS
    }
    members = [
        {
            "checkpoint": str(path),
            "weight": weight,
            "step": checkpoint.get("state", {}).get("step"),
            "training_command": checkpoint.get("command", ""),
        }
        for path, weight, checkpoint in zip(paths, weights, checkpoints)
    ]
    return {
        **averaged,
        "state": {"step": max(m["step"] or 0 for m in members), "best_step": None},
        "config": first["config"],
        "settings": first["settings"],
        "scores": {},  # the members' validation scores do not describe their mean
        "weight_average": {"members": members},  # training.export copies it into the manifest's provenance
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="two or more best.pt / last.pt files")
    parser.add_argument("--out", type=Path, required=True, help="the averaged checkpoint to write")
    parser.add_argument(
        "--weights", default="", help="comma-separated member weights that sum to 1 (default: equal weights)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    except ValueError:
        LOG.error("--weights: not a list of numbers: %r", args.weights)
        return 2
    try:
        soup = average_checkpoints(args.checkpoints, weights)
    except TrainingError as err:
        LOG.error("%s", err)
        return 2
    soup["command"] = shlex.join([sys.executable, "-m", "training.average_checkpoints", *(argv or sys.argv[1:])])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_name(args.out.name + ".partial")
    torch.save(soup, temporary)
    temporary.replace(args.out)
    LOG.info("wrote %s: the mean of %d checkpoints", args.out, len(args.checkpoints))
    return 0


if __name__ == "__main__":
    sys.exit(main())
