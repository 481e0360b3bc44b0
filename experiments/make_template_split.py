"""Split file for the template-head study: the shipped phantom split plus template-derived heads by index.

    python experiments/make_template_split.py --heads data/template_heads --out configs/splits/template_mix.json

Template heads (case ids 1HNT000, ...) train for indices below --train, validate for the next --val, and the rest
are held-out test heads; the phantom cases keep their assignments from configs/splits/phantoms_final.json, so the
phantom test split stays the one every earlier model was scored on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.dataset import find_cases  # noqa: E402
from training.splits import Split, load_split, write_split  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=REPO / "configs/splits/phantoms_final.json")
    parser.add_argument("--heads", type=Path, required=True, help="the template heads' data folder")
    parser.add_argument("--train", type=int, default=30, help="template heads 0..N-1 train (default 30)")
    parser.add_argument("--val", type=int, default=4, help="the next N validate (default 4); the rest are test")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    base = load_split(args.base)
    assignments, regions = dict(base.assignments), dict(base.regions)
    for case_dir, region in find_cases(args.heads):
        index = int(case_dir.name[-3:])
        assignments[case_dir.name] = (
            "train" if index < args.train else ("val" if index < args.train + args.val else "test")
        )
        regions[case_dir.name] = region
    description = (
        f"{base.description} Plus template-derived heads (`python -m phantoms --anatomy template --regions HN "
        f"--cases 40 --seed 0`): indices 0-{args.train - 1} train, {args.train}-{args.train + args.val - 1} "
        f"validate, the rest test. Written by experiments/make_template_split.py."
    )
    write_split(Split(assignments, regions, description), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
