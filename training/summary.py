"""What a config's generator costs: parameters and FLOPs per 512 x 512 slice, without data or training.

    python -m training.summary --config configs/synthrad2025_task1.toml
    python -m training.summary --config configs/drifting.toml --config configs/presets/M.toml

The last line is always `parameters N gflop_per_slice G`: G is the forward pass on one slice with its context
slices (and noise channels), counted by torch's FlopCounterMode with a multiply-add as 2 FLOPs (convolutions and
matrix products; norms, activations and resizing are not counted). The network is built with random weights:
its cost does not depend on them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.manifest import training_spec
from training.config import load_config
from training.family import flops_per_slice, network_stride, parameter_count
from training.ldm import LDM_KINDS
from training.train import build_network


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, action="append", required=True, help="TOML config (overlays repeat)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value")
    parser.add_argument("--size", type=int, default=512, help="slice height and width in pixels (default 512)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.set)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    if config.model.kind in LDM_KINDS:
        parser.error(f"model.kind {config.model.kind!r}: the summary covers the one-step generators (drifting, l1)")
    stride = network_stride(config.model)
    if args.size % stride:
        parser.error(f"--size {args.size} is not a multiple of the network's stride {stride}")
    spec = training_spec(config.manifest, "drifting", config.settings)
    model = build_network(config, spec)
    parameters = parameter_count(model)
    gflop = flops_per_slice(model, args.size, args.size) / 1e9
    described = {key: value for key, value in model.config.items() if key != "output_init"}
    print(f"config {' + '.join(str(path) for path in args.config)}")
    print(f"arch {config.model.arch} preset {config.model.preset or '-'} stride {stride} {described}")
    print(
        f"input {spec.context_slices} context slices + {config.model.noise_channels} noise, {args.size} x {args.size}"
    )
    print(f"parameters {parameters} gflop_per_slice {gflop:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
