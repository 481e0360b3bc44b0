"""One case through the stages: read -> prepare -> generate (K samples) -> restore -> finalise -> write, each timed.

Models load once per run (`GeneratorPool`); a region's fallback runs when its primary cannot load or gives an
unusable output, and the case's record says so.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.ensemble import predict_views, view_count
from engine.generators import Generator, GeneratorError, auto_batch_size
from engine.kinds import load_generator
from engine.manifest import Manifest, ManifestError, ModelSpec
from engine.regions import RegionError
from engine.runtime import DeviceError, parallel_calls
from pipeline.cases import Case, same_file
from pipeline.timing import StageTimes
from postprocessing import finalise_hu, to_input_grid, write_image_atomic
from postprocessing.write import remove_stale_temporaries
from preprocessing import CaseError, Geometry, Prepared, prepare_case
from preprocessing.errors import printable
from preprocessing.slices import batch_centres, slice_stacks

LOG = logging.getLogger(__name__)

#: The sanity check on a model's output (in HU, inside the body): beyond these it is unusable.
SANE_BODY_MEAN_HU = (-700.0, 700.0)
MAX_SATURATED_FRACTION = 0.5


@dataclass
class RunOptions:
    """Run-wide knobs from the command line."""

    device: str = "auto"
    batch_size: int | None = None
    samples: int = 1
    model_override: str | None = None
    progress: bool = True
    memory_budget_bytes: int | None = None  # None: SCT_MEMORY_BUDGET_GB or 4 GB (preprocessing.load)
    manifest_note: str | None = None  # why the baked-in manifest runs (a model tarball was unusable)
    calls: int | None = None  # network calls at once; None: engine.runtime.parallel_calls (the CPU's cores)


@dataclass
class CaseResult:
    """What happened to one case: the results.json entry is built from it."""

    case: Case
    model: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # repairs made to the inputs (a mask resampled)
    fallback_reason: str | None = None
    seconds: float = 0.0
    stages: StageTimes = field(default_factory=StageTimes)

    @property
    def ok(self) -> bool:
        return not self.errors


class UnusableOutput(RuntimeError):
    """A model ran but its output fails the sanity check."""


class GeneratorPool:
    """Loads each model once per run and remembers which could not load (and why)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._loaded: dict[str, Generator] = {}
        self._failed: dict[str, str] = {}

    def get(self, spec: ModelSpec) -> Generator:
        # Keyed by name and sampler: regions may run one model entry with their own DDIM steps or seed.
        key = f"{spec.name} {json.dumps(spec.sampler, sort_keys=True)}"
        if key in self._failed:
            raise GeneratorError(self._failed[key])
        if key not in self._loaded:
            try:
                self._loaded[key] = load_generator(spec, self.device)
            except (ManifestError, GeneratorError, DeviceError, OSError) as err:
                self._failed[key] = str(err)
                raise GeneratorError(str(err)) from err
            LOG.info(
                "model %r (%s, sampler %s) ready on %s", spec.name, spec.kind, spec.sampler, self._loaded[key].device
            )
        return self._loaded[key]


def slice_seeds(seed: int, sample: int, centres: np.ndarray) -> np.ndarray:
    """One seed per (run seed, sample, slice): independent of batching."""
    return np.array(
        [np.random.SeedSequence([seed, sample, int(z)]).generate_state(1)[0] for z in centres], dtype=np.uint64
    )


@contextmanager
def _mapper(calls: int) -> Iterator[Callable]:
    """`map` in order: the built-in one for one call at a time, else a thread pool's (ONNX Runtime releases the GIL).

    Pending batches are cancelled when the consumer stops (an error, a signal), so a failed case does not run on."""
    if calls <= 1:
        yield map
        return
    pool = ThreadPoolExecutor(calls, thread_name_prefix="network")
    try:
        yield pool.map
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def generate(
    prepared: Prepared, generator: Generator, options: RunOptions, description: str = ""
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the generator over every slice, K times; return the mean and (K > 1) the standard deviation.

    With K > 1 every view of an ensemble or flip-augmented model (engine/ensemble.py) counts as one draw, so
    the standard deviation is the spread across samples, members and mirror views together.

    Several batches run at once on the CPU (options.calls, default engine.runtime.parallel_calls): each worker
    builds its batch's stacks and runs the network while the others do the same, and this thread takes the
    results in batch order, so the sums are made in the same order as one call at a time: bit-identical outputs.
    """
    spec = generator.spec
    volume = prepared.volume
    calls = options.calls or parallel_calls(generator.device)
    pixels = volume.shape[1] * volume.shape[2]
    batch = options.batch_size or auto_batch_size(spec, generator.device, pixels, calls=calls)
    seed = int(spec.sampler.get("seed", 0))
    views = view_count(generator)
    mean = np.zeros((volume.shape[0], *volume.shape[1:]), dtype=np.float32)
    m2 = np.zeros_like(mean) if options.samples > 1 else None
    work = [(sample, centres) for sample in range(options.samples) for centres in batch_centres(len(volume), batch)]

    def predict(item: tuple[int, np.ndarray]) -> list[np.ndarray]:
        sample, centres = item
        stacks = slice_stacks(volume, spec.context_slices, centres)
        seeds = slice_seeds(seed, sample, centres)
        return [generator.predict(stacks, seeds)] if m2 is None else predict_views(generator, stacks, seeds)

    with (
        tqdm(total=len(work), desc=description, unit="batch", disable=not options.progress, leave=False) as bar,
        _mapper(calls) as mapper,
    ):
        for (sample, centres), predicted in zip(work, mapper(predict, work)):
            if m2 is None:
                mean[centres] = predicted[0][:, 0]
                bar.update(1)
                continue
            for index, view in enumerate(predicted):
                # Welford: a running mean and sum of squared deviations, one pass, no stack of K volumes
                values = view[:, 0]
                delta = values - mean[centres]
                mean[centres] += delta / (sample * views + index + 1)
                m2[centres] += delta * (values - mean[centres])
            bar.update(1)
    if m2 is None:
        return mean, None
    np.divide(m2, options.samples * views, out=m2)
    return mean, np.sqrt(m2, out=m2)


def check_usable(hu: np.ndarray, mask: np.ndarray, spec: ModelSpec) -> None:
    """Raise UnusableOutput when the sCT is non-finite, mostly saturated, or its body mean is implausible."""
    bad = np.count_nonzero(~np.isfinite(hu))
    if bad:
        raise UnusableOutput(f"model {spec.name!r} produced {bad} NaN/inf voxel(s)")
    body = hu[mask > 0]
    low, high = spec.ct_window_hu
    saturated = np.count_nonzero((body <= low + 1) | (body >= high - 1)) / body.size
    if saturated > MAX_SATURATED_FRACTION:
        raise UnusableOutput(f"model {spec.name!r}: {100 * saturated:.0f}% of the body is at the HU window's ends")
    body_mean = float(body.mean(dtype=np.float64))
    if not SANE_BODY_MEAN_HU[0] <= body_mean <= SANE_BODY_MEAN_HU[1]:
        raise UnusableOutput(f"model {spec.name!r}: mean HU in the body {body_mean:.0f} is outside {SANE_BODY_MEAN_HU}")


def ensure_writable(folder: Path) -> None:
    """Create the output folder and prove it is writable before any work is done."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CaseError(folder, f"cannot create output folder ({err.strerror or err})") from err
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CaseError(folder, "output folder is not writable")
    remove_stale_temporaries(folder)


@dataclass
class Generated:
    """A finished sCT (and optional uncertainty map) on the input grid, with the model that made it."""

    sct: np.ndarray
    std: np.ndarray | None
    geometry: Geometry
    spec: ModelSpec
    warnings: list[str] = field(default_factory=list)


def _run_model(case: Case, spec: ModelSpec, pool: GeneratorPool, options: RunOptions, times: StageTimes) -> Generated:
    """Prepare, generate and restore with one model, each stage timed into `times`."""
    generator = pool.get(spec)
    prepared = prepare_case(case.mr, case.mask, spec, options.memory_budget_bytes, case.root, times.stage)
    with times.stage("network"):
        mean, std = generate(prepared, generator, options, description=case.case_id)
    prepared.volume = None  # free the model-space input before restoring (peak memory on large cases)
    with times.stage("restore"):
        hu = to_input_grid(mean, prepared, spec.ct_window_hu)
        del mean
        check_usable(hu, prepared.mask, spec)
        if std is not None:
            std *= (spec.ct_window_hu[1] - spec.ct_window_hu[0]) / 2.0
            std = to_input_grid(std, prepared)
            std[prepared.mask == 0] = 0.0
        return Generated(finalise_hu(hu, prepared.mask, spec), std, prepared.geometry, spec, prepared.warnings)


def run_case(case: Case, manifest: Manifest, pool: GeneratorPool, options: RunOptions) -> CaseResult:
    """Run one case end to end; every failure becomes a one-line error in the result, never an exception."""
    result = CaseResult(case)
    started = time.perf_counter()
    try:
        if case.input_error is not None:
            raise CaseError(None, case.input_error)
        if case.region is None:
            raise CaseError(None, case.region_error or "region unknown")
        try:
            route = manifest.resolve(case.region, options.model_override)
        except (RegionError, ManifestError) as err:
            raise CaseError(None, str(err)) from err
        if case.mask is None or not os.path.lexists(case.mask):
            raise CaseError(case.mask or case.mr, f"body mask missing for MR {case.mr.name}")
        ensure_writable(case.output.parent)
        if case.uncertainty_output is not None:
            ensure_writable(case.uncertainty_output.parent)
        try:
            generated = _run_model(case, route.primary, pool, options, result.stages)
        except (GeneratorError, UnusableOutput) as err:
            if route.fallback is None:
                raise CaseError(None, str(err)) from err
            result.fallback_reason = "; ".join(
                filter(None, [options.manifest_note, f"primary model {route.primary.name!r} failed: {err}"])
            )
            LOG.warning("%s: %s; running fallback %r", case.case_id, result.fallback_reason, route.fallback.name)
            try:
                generated = _run_model(case, route.fallback, pool, options, result.stages)
            except (GeneratorError, UnusableOutput) as fallback_err:
                raise CaseError(None, f"{err}; fallback {route.fallback.name!r} failed too: {fallback_err}") from err
        result.model = generated.spec.name
        result.warnings.extend(generated.warnings)
        if result.fallback_reason is None and options.manifest_note:
            result.fallback_reason = options.manifest_note
        with result.stages.stage("write"):
            if generated.std is not None and case.uncertainty_output is not None:
                write_image_atomic(generated.std, generated.geometry, case.uncertainty_output)
            try:
                write_image_atomic(generated.sct, generated.geometry, case.output)
            except Exception:
                if case.uncertainty_output is not None and case.uncertainty_output.exists():
                    case.uncertainty_output.unlink()
                raise
    except CaseError as err:
        result.errors.append(str(err))
    except Exception as err:  # noqa: BLE001 - one case must never stop the others or the results.json
        LOG.debug("%s: unexpected failure", case.case_id, exc_info=True)
        result.errors.append(
            f"{printable(case.mr, 400)}: {type(err).__name__}: {printable(' '.join(str(err).split()), 400)}"
        )
    if not result.ok:
        remove_stale_outputs(case)
    result.seconds = time.perf_counter() - started
    return result


def remove_stale_outputs(case: Case) -> None:
    """A failed case leaves no sCT under its name (not even one from an earlier run into the same folder)."""
    for path in (case.output, case.uncertainty_output):
        if path is None or same_file(path, case.mr) or same_file(path, case.mask):
            continue  # never delete an input, whatever name (or link) it is reached by
        try:
            if path.is_file() or path.is_symlink():
                path.unlink()
                LOG.info("%s: removed the earlier run's %s (this run failed for the case)", case.case_id, path.name)
        except OSError as err:
            LOG.warning("%s: cannot remove the stale output %s (%s)", case.case_id, path, err.strerror or err)
