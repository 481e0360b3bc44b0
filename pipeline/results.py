"""results.json in the grand-challenge template's legacy format, plus a provenance record for local runs."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from pipeline.run import CaseResult
from postprocessing.write import temporary_name


def result_entry(result: CaseResult) -> dict[str, Any]:
    """One case as the template writes it; `model`, `fallback_reason` and `warnings` are our additions."""
    case = result.case
    entry: dict[str, Any] = {
        "outputs": [] if not result.ok else [{"type": "metaio_image", "filename": str(case.output)}],
        "inputs": [
            {"type": "metaio_image", "filename": str(case.mr)},
            {"type": "metaio_image", "filename": str(case.mask)},
            case.region_input,
        ],
        "error_messages": list(result.errors),
    }
    if result.ok and case.uncertainty_output is not None:
        entry["outputs"].append({"type": "metaio_image", "filename": str(case.uncertainty_output)})
    if result.model is not None:
        entry["model"] = result.model
    if result.fallback_reason is not None:
        entry["fallback_reason"] = result.fallback_reason
    if result.warnings:
        entry["warnings"] = list(result.warnings)
    return entry


def write_json_atomic(data: Any, path: Path) -> None:
    """JSON to a temporary file, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path, ".json")
    try:
        temporary.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def run_info(arguments: dict[str, Any], manifest_path: Path, results: list[CaseResult]) -> dict[str, Any]:
    """What produced these outputs: arguments, manifest, software versions, per-case model, time and stage times
    (pipeline/timing.py: wall and CPU seconds, and cores used, per stage)."""
    import numpy
    import onnxruntime
    import SimpleITK

    return {
        "arguments": arguments,
        "manifest": str(manifest_path),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {
            "numpy": numpy.__version__,
            "SimpleITK": SimpleITK.Version_VersionString(),
            "onnxruntime": onnxruntime.__version__,
        },
        "cases": [
            {
                "case_id": r.case.case_id,
                "model": r.model,
                "seconds": round(r.seconds, 3),
                "ok": r.ok,
                "stages": r.stages.as_dict(),
            }
            for r in results
        ],
    }
