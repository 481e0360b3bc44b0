"""Pair synthetic CTs with their ground truth by case ID, in every layout the product reads and writes.

Ground truth (``--gt``): any folder below which case folders hold ``ct`` and ``mask`` images (``.mha`` or
``.nii.gz``), i.e. the released ``Task1/<REGION>/<ID>/{ct,mask}.mha``, a folder of region folders, a folder of
case folders, or one case folder. The case ID is the case folder's name; the region is the name of the folder
that holds it (AB, HN, TH, brain, pelvis), or, failing that, the region code inside the ID.

Predictions (``--pred``), all searched, in this order of precedence:

1. the product's output folder ``<pred>/images/synthetic-ct/<file>``; if ``<pred>/results.json`` lists the
   file, the case ID comes from the MR input it was made from (the case folder of a released-layout
   ``<ID>/mr.mha``, the file name of a template-layout ``images/mri/<name>.mha``), else from the file name;
2. the released layout, ``<ID>/sct.mha`` (at any depth up to 4 folders, e.g. ``Task1/HN/<ID>/sct.mha``);
3. a flat folder of ``<ID>.mha`` files.

A name is matched to a ground-truth ID exactly, else by a ``_``/``-``/``.``-separated token (``sct_1HNA001``),
else by a unique substring. Whatever cannot be paired is returned with the reason, never silently dropped.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.regions import REGIONS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd")
MAX_DEPTH = 4
UNKNOWN_REGION = "unknown"


@dataclass(frozen=True)
class GroundTruthCase:
    """One ground-truth case folder."""

    case_id: str
    region: str
    ct: Path
    mask: Path
    mr: Path | None = None
    segmentation: Path | None = None


@dataclass(frozen=True)
class CasePair:
    """A prediction matched with its ground truth."""

    case_id: str
    region: str
    prediction: Path
    ct: Path
    mask: Path
    mr: Path | None = None
    segmentation: Path | None = None


@dataclass
class Pairing:
    """The outcome of pairing: the pairs, and everything that could not be paired, with reasons."""

    pairs: list[CasePair] = field(default_factory=list)
    unpaired_predictions: list[dict[str, str]] = field(default_factory=list)
    gt_without_prediction: list[dict[str, str]] = field(default_factory=list)
    gt_problems: list[dict[str, str]] = field(default_factory=list)

    def report(self) -> dict[str, object]:
        """JSON-ready summary for metrics.json."""
        return {
            "n_pairs": len(self.pairs),
            "unpaired_predictions": self.unpaired_predictions,
            "gt_without_prediction": self.gt_without_prediction,
            "gt_problems": self.gt_problems,
        }


def strip_image_suffix(name: str) -> str | None:
    """File name without its image suffix, or None when it is not an image file we read."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _find_named_image(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.<image suffix>``, if present."""
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _walk(root: Path, max_depth: int = MAX_DEPTH):
    """os.walk limited to `max_depth` levels below root, hidden folders skipped, sorted for determinism."""
    root_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if len(here.parts) - root_depth >= max_depth:
            dirnames[:] = []
        yield here, sorted(filenames)


def region_of_folder(name: str) -> str | None:
    """The region code a released-layout folder name stands for (AB, hn, brain, ...: engine/regions.json), or None."""
    return next((code for code, row in REGIONS.items() if row.folder.lower() == name.lower()), None)


def region_from_id(case_id: str) -> str:
    """Region code inside a SynthRAD ID (1ABA005 -> AB, 1BA001 -> BRAIN), or 'unknown'.

    An ID is the task digit, the region's letters (engine/regions.json `id_letters`), a centre letter and a number.
    """
    letters = sorted(((row.id_letters, code) for code, row in REGIONS.items()), key=lambda item: -len(item[0]))
    pattern = "|".join(re.escape(text) for text, _ in letters)
    match = re.match(rf"^\d({pattern})[A-Z]\d+$", case_id, re.IGNORECASE)
    if match is None:
        return UNKNOWN_REGION
    return next(code for text, code in letters if text.lower() == match.group(1).lower())


def find_ground_truth(root: Path) -> tuple[dict[str, GroundTruthCase], list[dict[str, str]]]:
    """All ground-truth cases below `root` by ID, and the folders that look like cases but cannot be used."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ground-truth folder not found: {root}")
    cases: dict[str, GroundTruthCase] = {}
    problems: list[dict[str, str]] = []
    for folder, _ in _walk(root.resolve()):
        ct = _find_named_image(folder, "ct")
        if ct is None:
            continue
        case_id = folder.name
        mask = _find_named_image(folder, "mask")
        if mask is None:
            problems.append({"case_id": case_id, "path": str(folder), "reason": "ground truth has no mask image"})
            continue
        region = region_of_folder(folder.parent.name) or region_from_id(case_id)
        if case_id in cases:
            problems.append(
                {
                    "case_id": case_id,
                    "path": str(folder),
                    "reason": f"duplicate ground-truth ID (also {cases[case_id].ct.parent})",
                }
            )
            continue
        cases[case_id] = GroundTruthCase(
            case_id=case_id,
            region=region,
            ct=ct,
            mask=mask,
            mr=_find_named_image(folder, "mr"),
            segmentation=_find_named_image(folder, "segmentation"),
        )
    return cases, problems


def resolve_case_id(name: str, known_ids: set[str] | dict[str, object]) -> tuple[str | None, str]:
    """Match a name (file stem or folder name) to one known ID; returns (ID or None, how or why not)."""
    if name in known_ids:
        return name, "exact"
    by_lower = {k.lower(): k for k in known_ids}
    if name.lower() in by_lower:
        return by_lower[name.lower()], "exact (case-insensitive)"
    tokens = {t.lower() for t in re.split(r"[_\-.\s]+", name) if t}
    token_hits = sorted({by_lower[t] for t in tokens if t in by_lower})
    if len(token_hits) == 1:
        return token_hits[0], "token"
    if len(token_hits) > 1:
        return None, f"name matches several ground-truth IDs: {', '.join(token_hits)}"
    sub_hits = sorted(k for k in known_ids if k.lower() in name.lower())
    if len(sub_hits) == 1:
        return sub_hits[0], "substring"
    if len(sub_hits) > 1:
        return None, f"name matches several ground-truth IDs: {', '.join(sub_hits)}"
    return None, "no ground-truth case with this ID"


def _case_name_from_mr_path(mr_path: str) -> str:
    """The case name an MR input path stands for: its case folder for ``<ID>/mr.mha``, else its file stem."""
    p = Path(mr_path)
    stem = strip_image_suffix(p.name) or p.stem
    if stem.lower() in ("mr", "mri") and p.parent.name:
        return p.parent.name
    return stem


def read_results_json(pred_root: Path) -> dict[str, str]:
    """Map output file name -> case name (from the MR input) using ``<pred_root>/results.json``, if present."""
    path = pred_root / "results.json"
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s: cannot be read (%s); pairing by file name", path, err)
        return {}
    if not isinstance(entries, list):
        log.warning("%s: expected a list of cases; pairing by file name", path)
        return {}
    mapping: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        outputs = [o.get("filename") for o in entry.get("outputs", []) if isinstance(o, dict)]
        images = [
            i.get("filename")
            for i in entry.get("inputs", [])
            if isinstance(i, dict) and i.get("type", "metaio_image") == "metaio_image" and i.get("filename")
        ]
        # The MR is the input under images/mri/ or named mr.*; failing that the first image input.
        mri = [
            f
            for f in images
            if "/mri/" in f.replace("\\", "/") or (strip_image_suffix(Path(f).name) or "").lower() in ("mr", "mri")
        ]
        mr_path = (mri or images or [None])[0]
        if mr_path is None:
            continue
        for out in outputs:
            if out:
                mapping[Path(out).name] = _case_name_from_mr_path(mr_path)
    log.info("%s: %d output file(s) mapped to their MR input", path, len(mapping))
    return mapping


def _prediction_candidates(pred_root: Path) -> list[tuple[Path, str, str]]:
    """(file, name to match, layout) for every prediction file found, in order of precedence."""
    found: list[tuple[Path, str, str]] = []
    product_dir = pred_root / "images" / "synthetic-ct"
    if product_dir.is_dir():
        from_results = read_results_json(pred_root)
        for f in sorted(product_dir.iterdir()):
            stem = strip_image_suffix(f.name)
            if f.is_file() and stem is not None:
                if f.name in from_results:
                    found.append((f, from_results[f.name], "product output (results.json)"))
                else:
                    found.append((f, stem, "product output"))
    released: list[tuple[Path, str, str]] = []
    flat: list[tuple[Path, str, str]] = []
    for folder, filenames in _walk(pred_root):
        if folder == product_dir or product_dir in folder.parents:
            continue
        for name in filenames:
            stem = strip_image_suffix(name)
            if stem is None:
                continue
            if stem.lower() == "sct":
                released.append((folder / name, folder.name, "released layout"))
            elif folder == pred_root:
                flat.append((folder / name, stem, "flat folder"))
    return found + released + flat


def pair_cases(pred_root: Path, gt_root: Path) -> Pairing:
    """Pair every prediction below `pred_root` with the ground-truth case of the same ID below `gt_root`."""
    pred_root = Path(pred_root).resolve()
    if not pred_root.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_root}")
    gt_cases, gt_problems = find_ground_truth(Path(gt_root))
    pairing = Pairing(gt_problems=gt_problems)
    if not gt_cases:
        log.error("no ground-truth case (a folder with ct and mask images) found under %s", gt_root)
    used: dict[str, Path] = {}
    for path, name, layout in _prediction_candidates(pred_root):
        case_id, how = resolve_case_id(name, set(gt_cases))
        if case_id is None:
            pairing.unpaired_predictions.append({"path": str(path), "name": name, "reason": how})
            continue
        if case_id in used:
            pairing.unpaired_predictions.append(
                {
                    "path": str(path),
                    "name": name,
                    "reason": f"another prediction for {case_id} came first: {used[case_id]}",
                }
            )
            continue
        used[case_id] = path
        gt = gt_cases[case_id]
        log.debug("paired %s (%s, %s match) with %s", path, layout, how, gt.ct.parent)
        pairing.pairs.append(CasePair(prediction=path, **asdict(gt)))
    for case_id, gt in sorted(gt_cases.items()):
        if case_id not in used:
            pairing.gt_without_prediction.append({"case_id": case_id, "region": gt.region, "path": str(gt.ct.parent)})
    pairing.pairs.sort(key=lambda p: (p.region, p.case_id))
    return pairing


def log_pairing(pairing: Pairing) -> None:
    """Say plainly what was paired and what was not."""
    log.info("paired %d case(s)", len(pairing.pairs))
    for item in pairing.unpaired_predictions:
        log.warning("prediction not paired: %s (%s)", item["path"], item["reason"])
    for item in pairing.gt_problems:
        log.warning("ground truth not usable: %s (%s)", item["path"], item["reason"])
    if pairing.gt_without_prediction:
        ids = ", ".join(item["case_id"] for item in pairing.gt_without_prediction)
        log.warning("%d ground-truth case(s) have no prediction: %s", len(pairing.gt_without_prediction), ids)
