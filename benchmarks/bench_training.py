"""Training steps per second of generator recipes on this machine (measures; nothing is asserted).

    python benchmarks/bench_training.py --config configs/drifting.toml --steps 40 \
        --variant "fp32, 1 thread (the shipped 1500-step recipe)=run.threads=1,optim.cpu_bf16=false" \
        --variant "bf16, 2 threads=run.threads=2,optim.cpu_bf16=true"

Each variant is `label=key=value,key=value` (training-config overrides, JSON values). The training volumes are
loaded once (as the trainer keeps them: preprocessed, in memory) and shared by every variant; each variant
times `--steps` optimiser steps after `--warmup` untimed ones, data loading included (the trainer's loader with
its configured workers), then the data side alone in CPU time (`data_cpu_ms_per_batch`: building one batch of
crops, MR randomisation included; what a randomisation level adds to a step on the main thread, and the number
to compare when other jobs share the machine). Prints one JSON object and writes it to --out when given.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from engine.manifest import training_spec  # noqa: E402
from training.config import load_config  # noqa: E402
from training.dataset import find_cases, load_volume  # noqa: E402
from training.train import (  # noqa: E402
    build_crops,
    build_network,
    build_objective,
    training_cases,
    training_step,
    use_mixed_precision,
)

LOG = logging.getLogger("bench_training")


def parse_variant(text: str) -> tuple[str, list[str]]:
    label, _, overrides = text.partition("=")
    return label.strip(), [item for item in overrides.split(",") if item.strip()]


def time_variant(config_path: Path, overrides: list[str], volumes, steps: int, warmup: int) -> dict:
    config = load_config(config_path, overrides)
    torch.manual_seed(config.run.seed)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    device = torch.device("cpu")
    spec = training_spec(config.manifest, "one_step", config.settings)
    dataset = build_crops(config, spec, volumes, (steps + warmup) * config.optim.batch_size)
    loader = DataLoader(
        dataset,
        batch_size=config.optim.batch_size,
        shuffle=True,
        num_workers=config.run.workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    model = build_network(config, spec)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr)
    objective = build_objective(config, device)
    use_amp = use_mixed_precision(config, device)
    generator = torch.Generator().manual_seed(0)
    started = None
    for index, batch in enumerate(loader):
        if index == warmup:
            started = time.perf_counter()
        loss, _ = training_step(model, batch, config, generator, use_amp, objective)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    # the data side alone, in CPU time of this process (robust on a shared machine): one batch of crops, as the
    # trainer's loader builds it on the main thread (run.workers = 0), MR randomisation included
    crops = build_crops(config, spec, volumes, steps * config.optim.batch_size)
    cpu = time.process_time()
    for index in range(steps * config.optim.batch_size):
        crops[index]
    data_ms = 1000 * (time.process_time() - cpu) / steps
    return {
        "steps_per_second": round(steps / seconds, 3),
        "ms_per_step": round(1000 * seconds / steps, 1),
        "data_cpu_ms_per_batch": round(data_ms, 1),
        "threads": torch.get_num_threads(),
        "bf16": use_amp,
        "overrides": overrides,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "drifting.toml")
    parser.add_argument("--variant", action="append", required=True, help="label=key=value,key=value")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cases", type=int, default=6, help="training volumes to load (speed does not depend on it)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    base = load_config(args.config)
    spec = training_spec(base.manifest, "one_step", base.settings)
    train_cases, _ = training_cases(find_cases(Path(base.data.root), list(base.data.regions)), base)
    volumes = [load_volume(d, r, spec, compact=True) for d, r in train_cases[: args.cases]]
    results = {}
    for text in args.variant:
        label, overrides = parse_variant(text)
        results[label] = time_variant(args.config, overrides, volumes, args.steps, args.warmup)
        LOG.info("%s: %s", label, results[label])
    report = {"config": str(args.config), "cpu_threads_available": torch.get_num_threads(), "variants": results}
    print(json.dumps(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
