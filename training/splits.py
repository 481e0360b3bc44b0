"""Train / validation / test splits by case id, fixed in a committed JSON file (like nnU-Net's splits_final.json).

Why a file and not a seeded draw at run time: the test split must stay untouched by every training run, every
checkpoint choice and every ablation, across sessions and code changes. A draw that depends on the list of cases
found on disk silently moves cases between splits when a case is added; a committed file cannot.

    python -m training.splits create --data data/phantoms_final --out configs/splits/my_split.json \
        --val-per-region 2 --test-per-region 3 --seed 0
    python -m training.splits extend --split OLD.json --data DIR --out NEW.json --test-per-region 3
    python -m training.splits show configs/splits/phantoms_final.json --data data/phantoms_final
    python -m training.splits kfold --split configs/splits/phantoms_final.json --folds 3 --seed 0 \
        --out configs/splits/phantoms_final_3fold.json

File format: {"schema_version": 1, "description": ..., "cases": {"<case id>": {"region": "HN", "split": "test"}},
"folds": [["<case id>", ...], ...]}. "folds" is optional: k-fold cross-validation (nnU-Net style) lists the
validation cases of each fold; fold k trains on every train/val case outside fold k. Folds never touch the test
split, so the ensemble of fold models is scored on the same untouched test cases as a single model.
Validation chooses checkpoints, early stopping and ablations; the test split is scored once per shipped model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SCHEMA_VERSION = 1


class SplitError(ValueError):
    """A split file that cannot be used, or a case used where its split forbids it."""


@dataclass(frozen=True)
class Split:
    """Which split each case id belongs to (and its region)."""

    assignments: dict[str, str]  # case id -> "train" | "val" | "test"
    regions: dict[str, str]  # case id -> region code
    description: str = ""
    source: str = field(default="", compare=False)  # the file it came from, for messages
    folds: tuple[tuple[str, ...], ...] = ()  # validation case ids of each cross-validation fold (may be empty)

    def ids(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise SplitError(f"unknown split {split!r}; known: {SPLITS}")
        return sorted(case for case, where in self.assignments.items() if where == split)

    def split_of(self, case_id: str) -> str | None:
        return self.assignments.get(case_id)

    def select(self, cases: Iterable[tuple[Path, str]], split: str) -> list[tuple[Path, str]]:
        """The (case folder, region) pairs of `cases` that belong to `split`, in the given order."""
        wanted = set(self.ids(split))
        return [case for case in cases if case[0].name in wanted]

    def fold(self, k: int) -> tuple[list[str], list[str]]:
        """(training ids, validation ids) of fold `k`: the fold's cases validate, every other non-test case trains."""
        if not self.folds:
            raise SplitError(
                f"{self.source or 'the split file'} has no folds; add them with `python -m training.splits kfold`"
            )
        if not 0 <= k < len(self.folds):
            raise SplitError(
                f"fold {k} does not exist: {self.source or 'the split file'} has folds 0-{len(self.folds) - 1}"
            )
        held = set(self.folds[k])
        pool = [case for case, where in sorted(self.assignments.items()) if where != "test"]
        return [case for case in pool if case not in held], sorted(held)

    def select_ids(self, cases: Iterable[tuple[Path, str]], ids: Iterable[str]) -> list[tuple[Path, str]]:
        """The (case folder, region) pairs of `cases` whose id is in `ids`, in the given order."""
        wanted = set(ids)
        return [case for case in cases if case[0].name in wanted]

    def require(self, cases: Iterable[tuple[Path, str]], split: str) -> None:
        """Refuse any case outside `split`: a benchmark must never report on a case used for training or selection."""
        for case_dir, _ in cases:
            where = self.split_of(case_dir.name)
            if where != split:
                raise SplitError(
                    f"{case_dir}: case {case_dir.name} is in the {where or 'no'} split of {self.source or 'the split file'}, "
                    f"not {split}: refusing to report on it"
                )

    def counts(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for case, where in self.assignments.items():
            row = table.setdefault(self.regions.get(case, "?"), dict.fromkeys(SPLITS, 0))
            row[where] += 1
        return dict(sorted(table.items()))

    def to_dict(self) -> dict:
        data: dict = {
            "schema_version": SCHEMA_VERSION,
            "description": self.description,
            "cases": {
                case: {"region": self.regions[case], "split": self.assignments[case]}
                for case in sorted(self.assignments)
            },
        }
        if self.folds:
            data["folds"] = [sorted(fold) for fold in self.folds]
        return data


def centre_of_case(case_id: str) -> str:
    """The centre letter of a SynthRAD case id (task digit, two-letter region, centre, number: 1HNA001 -> A).

    An id that does not follow the release's pattern counts as its own group "?" (stratified by region only)."""
    return case_id[3] if len(case_id) >= 5 and case_id[0].isdigit() and case_id[1:3].isalpha() else "?"


def add_folds(split: Split, n_folds: int, seed: int) -> Split:
    """k folds over the non-test cases, stratified by region and centre (seeded, deterministic).

    Cases of each (region, centre) group are shuffled and dealt in turn to the folds; the dealing continues across
    the groups of a region, so every fold gets a region's cases within one of each other and each centre spreads
    over the folds. The test split is left as it is.
    """
    if n_folds < 2:
        raise SplitError(f"need at least 2 folds, got {n_folds}")
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    pool = sorted(case for case, where in split.assignments.items() if where != "test")
    if len(pool) < n_folds:
        raise SplitError(f"{len(pool)} non-test case(s) cannot fill {n_folds} folds")
    for region in sorted({split.regions[c] for c in pool}):
        members = [c for c in pool if split.regions[c] == region]
        # start each region at a different fold so small regions do not all land in fold 0
        turn = int(rng.integers(n_folds))
        for centre in sorted({centre_of_case(c) for c in members}):
            group = [c for c in members if centre_of_case(c) == centre]
            for index in rng.permutation(len(group)).tolist():
                folds[turn % n_folds].append(group[index])
                turn += 1
    return Split(
        dict(split.assignments),
        dict(split.regions),
        split.description,
        split.source,
        tuple(tuple(sorted(fold)) for fold in folds),
    )


def load_split(path: Path | str) -> Split:
    """Read and validate a split file (unknown splits, missing regions and a wrong schema are errors)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SplitError(f"{path}: cannot read the split file: {err}") from err
    if (
        not isinstance(data, dict)
        or data.get("schema_version") != SCHEMA_VERSION
        or not isinstance(data.get("cases"), dict)
    ):
        raise SplitError(f"{path}: not a split file (need schema_version {SCHEMA_VERSION} and a 'cases' object)")
    assignments, regions = {}, {}
    for case, entry in data["cases"].items():
        if not isinstance(entry, dict) or entry.get("split") not in SPLITS or not isinstance(entry.get("region"), str):
            raise SplitError(f"{path}: case {case!r} needs a region and a split in {SPLITS}, got {entry!r}")
        assignments[case] = entry["split"]
        regions[case] = entry["region"]
    folds = _read_folds(path, data.get("folds", []), assignments)
    return Split(assignments, regions, str(data.get("description", "")), str(path), folds)


def _read_folds(path: Path, raw: object, assignments: dict[str, str]) -> tuple[tuple[str, ...], ...]:
    """Folds must be disjoint lists of known non-test cases that together cover every non-test case."""
    if not isinstance(raw, list) or not all(isinstance(f, list) and all(isinstance(c, str) for c in f) for f in raw):
        raise SplitError(f"{path}: 'folds' must be a list of lists of case ids")
    if not raw:
        return ()
    seen: set[str] = set()
    for index, fold in enumerate(raw):
        for case in fold:
            if assignments.get(case) in (None, "test"):
                raise SplitError(f"{path}: fold {index} holds {case!r}, which is a test case or not in 'cases'")
            if case in seen:
                raise SplitError(f"{path}: case {case!r} is in more than one fold")
            seen.add(case)
    missing = sorted(c for c, where in assignments.items() if where != "test" and c not in seen)
    if missing:
        raise SplitError(f"{path}: {len(missing)} non-test case(s) are in no fold (first: {missing[0]})")
    return tuple(tuple(sorted(fold)) for fold in raw)


def write_split(split: Split, path: Path | str) -> None:
    """Write atomically (a temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(split.to_dict(), indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def create_split(
    cases: list[tuple[Path, str]], val_per_region: int, test_per_region: int, seed: int, description: str = ""
) -> Split:
    """A seeded split per region: a permutation's first cases validate, the next ones test, the rest train.

    With test_per_region = 0 the validation cases equal the earlier trainer's seeded draw
    (`training.dataset.split_cases`), so older runs keep their meaning. At least one case per region trains.
    """
    rng = np.random.default_rng(seed)
    assignments, regions = {}, {}
    for region in sorted({r for _, r in cases}):
        members = sorted((c for c in cases if c[1] == region), key=lambda c: c[0].name)  # as find_cases orders them
        order = rng.permutation(len(members)).tolist()
        n_val = min(val_per_region, max(0, len(members) - 1))
        n_test = min(test_per_region, max(0, len(members) - 1 - n_val))
        for rank, index in enumerate(order):
            case_id = members[index][0].name
            assignments[case_id] = "val" if rank < n_val else ("test" if rank < n_val + n_test else "train")
            regions[case_id] = region
    _check_unique(cases)
    return Split(assignments, regions, description)


def extend_split(split: Split, cases: list[tuple[Path, str]], test_per_region: int, description: str = "") -> Split:
    """Keep every assignment of `split`; cases it does not know fill the test split per region first, then train.

    This is how a test split can be added after models were trained: cases no model has seen are untouched.
    """
    _check_unique(cases)
    assignments, regions = dict(split.assignments), dict(split.regions)
    for region in sorted({r for _, r in cases}):
        new = sorted(c[0].name for c in cases if c[1] == region and c[0].name not in assignments)
        have = sum(1 for case, where in assignments.items() if where == "test" and regions.get(case) == region)
        for case_id in new:
            assignments[case_id] = "test" if have < test_per_region else "train"
            have += assignments[case_id] == "test"
            regions[case_id] = region
    return Split(assignments, regions, description or split.description)


def _check_unique(cases: Iterable[tuple[Path, str]]) -> None:
    seen: dict[str, Path] = {}
    for case_dir, _ in cases:
        if case_dir.name in seen:
            raise SplitError(
                f"case id {case_dir.name} appears twice ({seen[case_dir.name]} and {case_dir}): ids must be unique"
            )
        seen[case_dir.name] = case_dir


def check_covers(split: Split, cases: list[tuple[Path, str]]) -> None:
    """Every case found on disk must be in the split file (a new case must be assigned on purpose)."""
    unknown = [c[0].name for c in cases if c[0].name not in split.assignments]
    if unknown:
        raise SplitError(
            f"{split.source}: {len(unknown)} case(s) found on disk are not in the split file "
            f"(first: {unknown[0]}); add them with `python -m training.splits extend`"
        )


def main(argv: list[str] | None = None) -> int:
    from training.dataset import find_cases

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="a new seeded split of a data folder")
    create.add_argument("--data", type=Path, required=True, help="released layout root (<REGION>/<ID>/mr.mha ...)")
    create.add_argument("--out", type=Path, required=True)
    create.add_argument("--val-per-region", type=int, default=2)
    create.add_argument("--test-per-region", type=int, default=3)
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--description", default="")
    extend = sub.add_parser("extend", help="keep an existing split, assign new cases to test (then train)")
    extend.add_argument("--split", type=Path, required=True)
    extend.add_argument("--data", type=Path, required=True)
    extend.add_argument("--out", type=Path, required=True)
    extend.add_argument("--test-per-region", type=int, default=3)
    extend.add_argument("--description", default="")
    kfold = sub.add_parser("kfold", help="add k cross-validation folds (stratified by region and centre) to a split")
    kfold.add_argument("--split", type=Path, required=True)
    kfold.add_argument("--folds", type=int, default=5)
    kfold.add_argument("--seed", type=int, default=0)
    kfold.add_argument("--out", type=Path, required=True)
    show = sub.add_parser("show", help="print the counts per region and split")
    show.add_argument("split", type=Path)
    show.add_argument("--data", type=Path, help="also check that every case found here is in the file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "create":
            split = create_split(
                find_cases(args.data), args.val_per_region, args.test_per_region, args.seed, args.description
            )
            write_split(split, args.out)
        elif args.command == "extend":
            split = extend_split(load_split(args.split), find_cases(args.data), args.test_per_region, args.description)
            write_split(split, args.out)
        elif args.command == "kfold":
            split = add_folds(load_split(args.split), args.folds, args.seed)
            write_split(split, args.out)
        else:
            split = load_split(args.split)
            if args.data is not None:
                check_covers(split, find_cases(args.data))
    except SplitError as err:
        LOG.error("%s", err)
        return 2
    for region, row in split.counts().items():
        print(f"{region}: " + ", ".join(f"{name} {row[name]}" for name in SPLITS))
    for index, fold in enumerate(split.folds):
        per_region = {}
        for case in fold:
            per_region[split.regions[case]] = per_region.get(split.regions[case], 0) + 1
        print(f"fold {index}: " + ", ".join(f"{region} {n}" for region, n in sorted(per_region.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
