"""Preprocessing cache: every training case once through the inference preprocessing, kept as memory-mapped arrays.

Reading a release (about 890 MR/CT pairs) through `preprocessing.prepare_case` costs seconds per case; doing it
at every start of every fold's training wastes GPU hours. Like nnU-Net's preprocessed folder, the cache holds each
case in model space, exactly the arrays `training.dataset.load_volume(compact=True)` returns:

    <cache>/<case id>/mr.npy    float16  normalised MR   [slices, H, W]
    <cache>/<case id>/ct.npy    float16  CT in [-1, 1] over the model's HU window
    <cache>/<case id>/mask.npy  uint8    body mask
    <cache>/<case id>/meta.json          key, region, shape, the settings and source files it was built from

Each case has a key: a hash of the model settings that shape its arrays (spacing, divisibility, normalisation,
HU window), the cache format version, and the size and modification time of its three source files. A changed
setting or a replaced file changes the key and rebuilds exactly the stale cases; nothing else is read again
(stat only, so a cached epoch opens no MHA/NIfTI file). A case is written under a temporary name and renamed
when complete, so an interrupted build resumes where it stopped. Cases build in parallel worker processes.

    python -m training.cache --data data/phantoms_final --cache cache/phantoms_final --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from modelspec import ModelSpec

LOG = logging.getLogger(__name__)

#: Bump when the preprocessing code changes what the arrays hold: every cached case is then rebuilt.
CACHE_VERSION = 1
SOURCES = ("mr.mha", "ct.mha", "mask.mha")
ARRAYS = (("mr", np.float16), ("ct", np.float16), ("mask", np.uint8))


class CacheError(RuntimeError):
    """A cache folder that cannot be used (unwritable, or a case that failed to build)."""


@dataclass(frozen=True)
class CacheReport:
    """What one `build_cache` call did."""

    built: int
    reused: int
    seconds: float  # wall time of the build (0 when nothing was stale)
    bytes: int  # size of the cached arrays of all requested cases

    @property
    def seconds_per_built_case(self) -> float:
        return self.seconds / self.built if self.built else 0.0


def shaping_settings(spec: ModelSpec) -> dict:
    """The settings that shape the cached arrays (not the sampler, not the output dtype or outside fill)."""
    settings = spec.settings()
    return {key: settings[key] for key in ("spacing_xy_mm", "divisible_by", "mr_normalisation", "ct_window_hu")}


def case_key(case_dir: Path, spec: ModelSpec) -> str:
    """The hash a cached case must carry to be fresh: format version, shaping settings, source files' stat."""
    sources = {}
    for name in SOURCES:
        stat = (case_dir / name).stat()
        sources[name] = [stat.st_size, stat.st_mtime_ns]
    text = json.dumps(
        {"version": CACHE_VERSION, "settings": shaping_settings(spec), "sources": sources}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _meta(cache_dir: Path, case_id: str) -> dict | None:
    try:
        return json.loads((cache_dir / case_id / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def is_fresh(case_dir: Path, spec: ModelSpec, cache_dir: Path) -> bool:
    meta = _meta(cache_dir, case_dir.name)
    return meta is not None and meta.get("key") == case_key(case_dir, spec)


def _build_one(case_dir: Path, region: str, spec: ModelSpec, cache_dir: Path) -> float:
    """Preprocess one case and write it under a temporary name, then rename it into place; returns seconds."""
    from training.dataset import load_volume

    start = time.perf_counter()
    key = case_key(case_dir, spec)
    volume = load_volume(case_dir, region, spec, compact=True)
    temporary = cache_dir / f".{case_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    for name, dtype in ARRAYS:
        np.save(temporary / f"{name}.npy", np.ascontiguousarray(getattr(volume, name), dtype=dtype))
    meta = {
        "key": key,
        "case_id": case_dir.name,
        "region": region,
        "shape": list(volume.mr.shape),
        "settings": shaping_settings(spec),
        "source": str(case_dir),
        "cache_version": CACHE_VERSION,
    }
    (temporary / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    final = cache_dir / case_dir.name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    return time.perf_counter() - start


def build_cache(
    cases: list[tuple[Path, str]], spec: ModelSpec, cache_dir: Path, workers: int = 1, progress: bool = True
) -> CacheReport:
    """Bring the cache up to date for `cases` (case folder, region): build what is missing or stale, keep the rest."""
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(f"{cache_dir}: cannot create the cache folder ({err.strerror or err})") from err
    for leftover in cache_dir.glob(".*.tmp-*"):  # an interrupted build's half-written case
        shutil.rmtree(leftover, ignore_errors=True)
    stale = [(d, r) for d, r in cases if not is_fresh(d, spec, cache_dir)]
    start = time.perf_counter()
    if stale:
        LOG.info("cache %s: building %d case(s), %d up to date", cache_dir, len(stale), len(cases) - len(stale))
    with tqdm(total=len(stale), desc="cache", unit="case", disable=not progress or not stale) as bar:
        if workers <= 1 or len(stale) <= 1:
            for case_dir, region in stale:
                _build_checked(case_dir, region, spec, cache_dir)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [(d, pool.submit(_build_one, d, r, spec, cache_dir)) for d, r in stale]
                for case_dir, future in futures:
                    try:
                        future.result()
                    except Exception as err:  # noqa: BLE001  (one line naming the case, whatever failed)
                        raise CacheError(f"{case_dir}: cannot preprocess for the cache: {err}") from err
                    bar.update(1)
    seconds = time.perf_counter() - start if stale else 0.0
    size = sum((cache_dir / d.name / f"{name}.npy").stat().st_size for d, _ in cases for name, _ in ARRAYS)
    return CacheReport(len(stale), len(cases) - len(stale), seconds, size)


def _build_checked(case_dir: Path, region: str, spec: ModelSpec, cache_dir: Path) -> None:
    try:
        _build_one(case_dir, region, spec, cache_dir)
    except Exception as err:  # noqa: BLE001
        raise CacheError(f"{case_dir}: cannot preprocess for the cache: {err}") from err


def load_cached(case_dir: Path, region: str, spec: ModelSpec, cache_dir: Path):
    """The case as a compact TrainingVolume whose arrays are memory-mapped from the cache (no image file opened).

    Raises CacheError when the case is missing or stale: build the cache first."""
    from training.dataset import TrainingVolume

    cache_dir = Path(cache_dir)
    if not is_fresh(case_dir, spec, cache_dir):
        raise CacheError(f"{cache_dir / case_dir.name}: missing or stale in the cache; run build_cache first")
    arrays = {name: np.load(cache_dir / case_dir.name / f"{name}.npy", mmap_mode="r") for name, _ in ARRAYS}
    return TrainingVolume(case_dir.name, region, case_dir, arrays["mr"], arrays["ct"], arrays["mask"], None)


def main(argv: list[str] | None = None) -> int:
    from engine.manifest import ManifestError, training_spec
    from training.config import load_config
    from training.dataset import find_cases

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="released layout root (<REGION>/<ID>/mr.mha ...)")
    parser.add_argument("--cache", type=Path, required=True, help="cache folder (created)")
    parser.add_argument("--config", type=Path, help="training config whose manifest and [settings] apply")
    parser.add_argument("--regions", default="", help="comma-separated regions (default: all found)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(args.config, [])
    try:
        spec = training_spec(config.manifest, "one_step", config.settings)
    except ManifestError as err:
        LOG.error("%s", err)
        return 2
    regions = [r for r in args.regions.split(",") if r.strip()] or None
    cases = find_cases(args.data, regions)
    if not cases:
        LOG.error("%s: no cases with mr/ct/mask", args.data)
        return 2
    try:
        report = build_cache(cases, spec, args.cache, args.workers)
    except CacheError as err:
        LOG.error("%s", err)
        return 2
    print(
        json.dumps(
            {
                "cases": len(cases),
                "built": report.built,
                "reused": report.reused,
                "seconds_per_built_case": round(report.seconds_per_built_case, 3),
                "megabytes": round(report.bytes / 1e6, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
