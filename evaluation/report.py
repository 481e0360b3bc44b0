"""Summaries and files of an evaluation run: aggregates, per-region summaries, metrics.json and CSV tables.

``metrics.json`` follows the shape of the official evaluator's (``results``: one dict per case;
``aggregates``: per metric mean, std, min, max, 25pc, 50pc, 75pc, count) and adds what a person needs to trust
it: the case ID and region in every result, per-region summaries, and what could not be paired or scored.

JSON has no infinity: a non-finite value is written as null, and a perfect prediction's PSNR (+inf) also gets
``"psnr_is_infinite": true`` (the convention of ``test/data/reference_metrics/expected.json``). Aggregates are
taken over the finite values only; ``not_finite`` counts the others when there are any. ``std`` is the sample
standard deviation (n - 1), as pandas' ``describe`` (used by the grand-challenge evaluation utilities) gives.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

IMAGE_METRICS = ("mae", "psnr", "ms_ssim")
SEGMENTATION_METRICS = ("dice", "hd95")
AGGREGATE_KEYS = ("mean", "std", "min", "max", "25pc", "50pc", "75pc", "count")


def _finite_or_none(value: object) -> object:
    """float -> float or None (JSON cannot hold NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def aggregate(values: list[float]) -> dict[str, float | int | None]:
    """mean, std (n-1), min, max, quartiles and count of the finite values."""
    arr = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    out: dict[str, float | int | None] = dict.fromkeys(AGGREGATE_KEYS)
    out["count"] = n
    if n:
        q25, q50, q75 = np.percentile(arr, [25, 50, 75])
        out.update(
            mean=float(arr.mean()),
            std=float(arr.std(ddof=1)) if n > 1 else None,
            min=float(arr.min()),
            max=float(arr.max()),
            **{"25pc": float(q25), "50pc": float(q50), "75pc": float(q75)},
        )
    not_finite = len(values) - n
    if not_finite:
        out["not_finite"] = not_finite
    return out


def metric_names(results: list[dict]) -> list[str]:
    """The metrics present in the results, in a fixed order (dosimetric ones last, per-beam ones after them)."""
    from evaluation.dosimetry import DOSIMETRY_METRICS

    fixed = (*IMAGE_METRICS, *SEGMENTATION_METRICS, *DOSIMETRY_METRICS)
    names = [m for m in fixed if any(m in r for r in results)]
    extra = sorted(
        {k for r in results for k in r if k.startswith(("bone_dice_", "wepl_", "range_error_pct_"))} - set(fixed)
    )
    return names + extra


def summarise(results: list[dict]) -> tuple[dict, dict]:
    """(aggregates over all cases, {region: {"n_cases", metric: aggregates}})."""
    metrics = metric_names(results)
    overall = {m: aggregate([r.get(m) for r in results if m in r]) for m in metrics}
    regions: dict[str, dict] = {}
    for region in sorted({r["region"] for r in results}):
        rows = [r for r in results if r["region"] == region]
        regions[region] = {"n_cases": len(rows), **{m: aggregate([r.get(m) for r in rows if m in r]) for m in metrics}}
    return overall, regions


def case_result(case_id: str, region: str, scores: dict[str, float], prediction: Path) -> dict:
    """One entry of ``results``: the scores as floats (inf/NaN kept until writing), ID, region and file."""
    return {
        "case_id": case_id,
        "region": region,
        **{k: float(v) for k, v in scores.items()},
        "prediction": str(prediction),
    }


def _jsonable_results(results: list[dict]) -> list[dict]:
    out = []
    for r in results:
        row = {k: _finite_or_none(v) for k, v in r.items()}
        if isinstance(r.get("psnr"), float) and math.isinf(r["psnr"]) and r["psnr"] > 0:
            row["psnr_is_infinite"] = True
        out.append(row)
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_metrics_json(path: Path, document: dict) -> None:
    """metrics.json, strict JSON (no NaN/Infinity)."""
    doc = dict(document)
    doc["results"] = _jsonable_results(document["results"])
    _atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def _csv_value(value: object) -> object:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return "" if value is None else value


def write_case_csv(path: Path, results: list[dict]) -> None:
    """One row per case: ID, region, each metric (inf written as 'inf'), prediction file."""
    columns = ["case_id", "region", *metric_names(results), "prediction"]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in results:
            writer.writerow([_csv_value(r.get(c)) for c in columns])
    os.replace(tmp, path)


def write_region_csv(path: Path, overall: dict, regions: dict) -> None:
    """One row per (region, metric) plus the 'ALL' rows: count, mean, std, min, quartiles, max."""
    columns = ["region", "metric", "count", "mean", "std", "min", "25pc", "50pc", "75pc", "max"]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        blocks = [(name, {k: v for k, v in summary.items() if k != "n_cases"}) for name, summary in regions.items()]
        blocks.append(("ALL", overall))
        for region, summary in blocks:
            for metric, agg in summary.items():
                writer.writerow([region, metric, *[_csv_value(agg.get(c)) for c in columns[2:]]])
    os.replace(tmp, path)
