"""Write configs/splits/phantoms_final.json: the committed train / val / test split of the shipped phantom set.

    python -m phantoms --out data/phantoms_final --regions HN,TH,AB --cases 15 --seed 0
    python scripts/make_phantom_split.py --data data/phantoms_final --out configs/splits/phantoms_final.json

Why this shape: every model shipped before the split existed (drifting, L1-only, the latent-diffusion fallback)
trained on phantom cases 0-11 of each region and chose its checkpoints on 2 of them (the trainer's seeded draw).
Those stay train and val. Cases 12-14 of each region were generated afterwards (a case does not depend on the
case count) and no model has seen them: they are the untouched test split (3 per region).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phantoms.generate import case_name  # noqa: E402
from training.dataset import find_cases  # noqa: E402
from training.splits import create_split, extend_split, write_split  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/phantoms_final"))
    parser.add_argument("--out", type=Path, default=Path("configs/splits/phantoms_final.json"))
    parser.add_argument("--trained-cases", type=int, default=12, help="case indices below this were used in training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cases = find_cases(args.data)
    earlier = {
        case_name(region, index, args.seed)[0]
        for region in {r for _, r in cases}
        for index in range(args.trained_cases)
    }
    legacy = create_split(
        [c for c in cases if c[0].name in earlier], val_per_region=2, test_per_region=0, seed=args.seed
    )
    split = extend_split(
        legacy,
        cases,
        test_per_region=3,
        description=(
            "Phantoms `python -m phantoms --regions HN,TH,AB --cases 15 --seed 0`. train/val: case indices 0-11 per region "
            "(val = the earlier trainer's seeded draw, 2 per region); test: indices 12-14, generated after every earlier "
            "model was trained and never used for training or selection. Written by scripts/make_phantom_split.py."
        ),
    )
    write_split(split, args.out)
    for region, row in split.counts().items():
        print(region, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
