"""The generator presets under torch on a GPU: forward seconds per 512 x 512 slice and one training step's seconds.

    python benchmarks/gpu_presets.py --out runs/gpu_check/presets.json          # on a GPU machine (about a minute)
    python benchmarks/gpu_presets.py --device cpu --size 64 --crop 64 --batch 2 --repeats 1   # a CPU smoke run

Per preset (S, M, L; untrained weights, the cost does not depend on them): the forward pass of a batch of `--batch`
slices (`--size` squared, 5 context slices + 1 noise channel) in float32 and under float16 autocast, and one training
step of the release recipe (`--train-batch` crops of `--crop` squared, float16 autocast with a gradient scaler,
AdamW, L1 + the anatomy loss with an untrained tissue network of the shipped size), each the median of `--repeats`
timed calls after warm-up, with the GPU synchronised; peak memory from torch. These are the measurements the
cost table's GPU estimates (benchmarks/preset_cost.py) stand in for. Writes --out and prints one JSON line.
Without CUDA (and without --device cpu) it prints why and exits 0: benchmarks/gpu_check.sh calls it on any machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(function, device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of `function()` over `repeats` calls after `warmup` calls."""
    import torch

    for _ in range(warmup):
        function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def tissue_checkpoint(folder: Path) -> Path:
    """An untrained tissue network in the checkpoint format of training/anatomy.py (the cost does not need training)."""
    import torch

    from training.anatomy import TISSUE_EDGES_HU, TISSUES, TissueNet

    net = TissueNet()
    path = folder / "tissue.pt"
    torch.save(
        {
            "tissue_net": net.state_dict(),
            "widths": list(net.widths),
            "tissues": list(TISSUES),
            "edges_hu": list(TISSUE_EDGES_HU),
            "ct_window_hu": [-1024.0, 3071.0],
            "feature_scale": [1.0] * len(net.widths),
        },
        path,
    )
    return path


def measure(preset: str, args: argparse.Namespace, device, objective) -> dict:
    """One preset's forward seconds per slice (float32, and float16 on a GPU) and training-step seconds."""
    import torch

    from training.config import load_config
    from training.family import build_generator, parameter_count

    torch.manual_seed(0)
    model = build_generator(load_config(None, [f'model.preset="{preset}"']).model, context_slices=5).to(device)
    row = {"preset": preset, "parameters": parameter_count(model)}
    mr = torch.randn(args.batch, 5, args.size, args.size, device=device)
    noise = torch.randn(args.batch, 1, args.size, args.size, device=device)
    model.eval()
    for name, amp in (("fp32", False), ("fp16", True)):
        if amp and device.type != "cuda":
            continue

        def forward(amp=amp):
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                model(mr, noise)

        row[f"forward_seconds_per_slice_{name}"] = round(timed(forward, device, args.repeats) / args.batch, 5)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    batch = {
        "mr": torch.randn(args.train_batch, 5, args.crop, args.crop, device=device),
        "noise": torch.randn(args.train_batch, 1, args.crop, args.crop, device=device),
        "ct": torch.rand(args.train_batch, 1, args.crop, args.crop, device=device) * 2 - 1,
        "mask": torch.ones(args.train_batch, 1, args.crop, args.crop, device=device),
    }

    def step():
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            pred = model(batch["mr"], batch["noise"])
        loss, _ = objective(pred.float(), batch["ct"], batch["mask"])
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row["train_step_seconds"] = round(timed(step, device, args.repeats), 4)
    if device.type == "cuda":
        row["train_peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="S,M,L")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--size", type=int, default=512, help="inference slice size (default %(default)s)")
    parser.add_argument("--batch", type=int, default=8, help="inference slices per call (default %(default)s)")
    parser.add_argument("--crop", type=int, default=384, help="training crop size (default: the recipe's %(default)s)")
    parser.add_argument("--train-batch", type=int, default=16, help="training crops per step (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check/presets.json"))
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"gpu_presets": "skipped: torch sees no CUDA device"}))
        return 0
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    from training.drifting import DriftConfig, DriftObjective

    report = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "settings": vars(args) | {"out": str(args.out)},
        "presets": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        objective = DriftObjective(
            DriftConfig(lambda_drift=0.0, lambda_anatomy=1.0, anatomy_checkpoint=str(tissue_checkpoint(Path(tmp)))),
            device=device,
        )
        for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
            report["presets"].append(measure(preset, args, device, objective))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"device": report["device"], "presets": report["presets"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
