"""An int8 copy of a one-step generator: ONNX Runtime static quantisation, calibrated on training-split slices.

    python -m training.quantise --manifest model_weights/manifest.json --source l1 --name l1_int8 \
        --data data/phantoms_final --split configs/splits/phantoms_final.json --out runs/quantise/manifest.json
    python benchmarks/compare_models.py --data data/phantoms_final --manifest runs/quantise/manifest.json \
        --models l1,l1_int8 --out runs/quantise/compare

The convolutions' weights int8 per output channel, their input activations uint8 per tensor, in QDQ form
(QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into integer kernels, QLinearConv on the CPU); the
output layer (the last convolution and what follows) stays float. The activation ranges are a high percentile of
each tensor over the central crops of `--slices` slices of the split's training cases, run through the very
preprocessing inference runs (never a validation or test case). The entry keeps every setting of its source; its
provenance records the calibration and the mean and largest difference from the source on validation slices (HU).
Whether it ships is decided on the test split (compare_models.py), not here.

`--out` writes an evaluation manifest (a copy of `--manifest` whose files are named by absolute path, plus the new
entry, its ONNX file beside it); without it the entry goes into `--manifest` itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from engine.base import slice_noise
from engine.manifest import DEFAULT_MANIFEST, ManifestError, ModelSpec, load_manifest, read_manifest_json, sha256_of
from preprocessing import prepare_case
from preprocessing.slices import slice_stacks
from training.errors import TrainingError
from training.manifest_entries import add_entry, copy_manifest
from training.splits import SplitError, load_split

LOG = logging.getLogger("training.quantise")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPLIT = REPO / "configs" / "splits" / "phantoms_final.json"
#: Slices with less body than this share of their pixels are not drawn (air says nothing about the ranges).
MIN_BODY_FRACTION = 0.05
#: Activation ranges: this percentile of each tensor's values on the calibration crops (both tails). Chosen on
#: validation slices (mean |int8 - fp32|: min/max 3.2 HU, 99.99 2.9 HU, 99.999 2.5 HU; benchmarks/README.md).
CALIBRATION_PERCENTILE = 99.999
#: Side of the central crop each calibration slice gives (smaller when a slice is): the histograms need one shape
#: (the smallest phantom slice is 224 pixels wide), and the centre holds the body.
CALIBRATION_CROP = 192


def sample_feeds(
    cases: list[tuple[Path, str]], spec: ModelSpec, slices: int, seed: int, noise_channels: int
) -> Iterator[dict[str, np.ndarray]]:
    """One network feed per slice (batch 1, whole slice, as inference runs it), `slices` in all, drawn evenly from
    `cases` (seeded): the normalised MR stack and, when the network takes one, its noise."""
    rng = np.random.default_rng(seed)
    per_case = np.full(len(cases), slices // max(1, len(cases)))
    per_case[: slices % max(1, len(cases))] += 1
    for (case_dir, _), count in zip(cases, per_case):
        if count == 0:
            continue
        prepared = prepare_case(case_dir / "mr.mha", case_dir / "mask.mha", spec)
        body = prepared.mask.reshape(prepared.mask.shape[0], -1).mean(axis=1) >= MIN_BODY_FRACTION
        candidates = np.flatnonzero(body) if body.any() else np.arange(len(prepared.volume))
        chosen = np.sort(rng.choice(candidates, size=min(int(count), len(candidates)), replace=False))
        for centre in chosen:
            feed = {"mr": slice_stacks(prepared.volume, spec.context_slices, np.array([centre]))}
            if noise_channels:
                _, _, height, width = feed["mr"].shape
                feed["noise"] = slice_noise(rng.integers(0, 2**63, size=1), noise_channels, height, width)
            yield feed


def central_crop(feed: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """The central size x size pixels of every input of a feed (the whole slice where it is smaller)."""
    height, width = feed["mr"].shape[2:]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return {key: np.ascontiguousarray(value[:, :, top : top + size, left : left + size]) for key, value in feed.items()}


def _noise_channels(model: Path) -> int:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inputs = {item.name: item.shape for item in session.get_inputs()}
    if "noise" not in inputs:
        return 0
    return inputs["noise"][1] if isinstance(inputs["noise"][1], int) else 1


#: What is quantised: the convolutions (inputs and weights; ONNX Runtime runs them as integer kernels). The
#: normalisation and element-wise layers between them stay float: quantising them too cost accuracy (mean
#: |int8 - fp32| on validation slices 3.6 HU against 2.4 HU, min/max ranges from 24 slices) for about 2 % of CPU
#: time (benchmarks/README.md).
QUANTISED_OPS = ("Conv", "ConvTranspose")


def output_layer(model_path: Path) -> list[str]:
    """The names of the last convolution and every node after it: they stay float, because an 8-bit output would
    step in 4095 / 255 = 16 HU. Unnamed nodes are named first (in the file), so the exclusion can name them."""
    import onnx

    model = onnx.load(str(model_path))
    nodes = model.graph.node
    if any(not node.name for node in nodes):
        for index, node in enumerate(nodes):
            node.name = node.name or f"{node.op_type}_{index}"
        onnx.save(model, str(model_path))
    last = max((index for index, node in enumerate(nodes) if node.op_type in QUANTISED_OPS), default=len(nodes))
    return [node.name for node in nodes[last:]]


def quantise_int8(source: Path, target: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """Static int8 quantisation of `source` (QDQ, per-channel int8 weights, uint8 activations whose ranges are the
    CALIBRATION_PERCENTILE of `feeds`, which must all have one shape)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference and graph clean-up first, as ONNX Runtime recommends (dimensions are dynamic: no symbolic)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        excluded = output_layer(prepared)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantiser warns once per node about 1-d constants (kept per tensor)
        try:
            quantize_static(
                str(prepared),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTISED_OPS),
                nodes_to_exclude=excluded,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
            )
        finally:
            root.setLevel(level)


def difference_hu(reference: Path, candidate: Path, feeds: list[dict[str, np.ndarray]], window) -> tuple[float, float]:
    """(max, mean) |candidate - reference| in HU over the feeds (CPU)."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for path in (reference, candidate)]
    worst, total, count = 0.0, 0.0, 0
    for feed in feeds:
        first, second = (session.run(None, feed)[0].astype(np.float64) for session in sessions)
        difference = np.abs(second - first) * (window[1] - window[0]) / 2.0
        worst, total, count = (
            max(worst, float(difference.max())),
            total + float(difference.sum()),
            count + difference.size,
        )
    return worst, total / max(1, count)


def add_int8(
    manifest_path: Path,
    source: str,
    name: str,
    data: Path,
    split_path: Path,
    slices: int = 64,
    seed: int = 0,
    check_slices: int = 8,
) -> dict[str, Any]:
    """Quantise the one-step generator `source` to <name>.onnx beside the manifest and add it as entry `name`."""
    from training.dataset import find_cases

    manifest = load_manifest(manifest_path)
    spec = manifest.models.get(source)
    if spec is None or spec.kind != "one_step" or spec.flip_tta:
        raise TrainingError(f"{manifest_path}: --source needs a plain one-step generator entry, got {source!r}")
    spec.verify_files()
    split = load_split(split_path)
    found = find_cases(data)
    train, val = split.select(found, "train"), split.select(found, "val")
    if not train:
        raise TrainingError(f"{data}: no case of the training split of {split_path}")
    target = manifest_path.parent / f"{name}.onnx"
    if target.resolve() == spec.file("generator").resolve():
        raise TrainingError(f"{target}: the int8 copy must not overwrite its source")
    noise = _noise_channels(spec.file("generator"))
    LOG.info("calibrating on %d slices of %d training cases", slices, len(train))
    whole = list(sample_feeds(train, spec, slices, seed, noise))
    side = min([CALIBRATION_CROP] + [min(feed["mr"].shape[2:]) for feed in whole])  # one shape for the histograms
    feeds = [central_crop(feed, side) for feed in whole]
    temporary = target.with_suffix(".onnx.tmp")
    quantise_int8(spec.file("generator"), temporary, feeds)
    os.replace(temporary, target)
    checks = list(sample_feeds(val or train, spec, check_slices, seed + 1, noise))
    worst, mean = difference_hu(spec.file("generator"), target, checks, spec.ct_window_hu)
    LOG.info("int8 vs fp32 on %d validation slices: max |difference| %.1f HU, mean %.2f HU", len(checks), worst, mean)
    entry = dict(read_manifest_json(manifest_path)["models"][source])
    entry["description"] = (
        f"{source} quantised to int8 (ONNX Runtime static QDQ: per-channel int8 weights, uint8 activations "
        f"calibrated on {len(feeds)} training-split slices; the output layer float); float32 inputs and outputs"
    )
    entry["files"] = {"generator": {"path": target.name, "sha256": sha256_of(target)}}
    entry["provenance"] = {
        **entry.get("provenance", {}),
        "int8_of": source,
        "int8_calibration": {
            "split": str(
                split_path.resolve().relative_to(REPO) if split_path.resolve().is_relative_to(REPO) else split_path
            ),
            "cases": [case_dir.name for case_dir, _ in train],
            "slices": len(feeds),
            "seed": seed,
            "method": f"percentile {CALIBRATION_PERCENTILE} of central {side}-pixel crops, per-channel "
            "weights, QDQ, convolutions but the output layer",
        },
        "int8_difference_hu": {"slices": "validation split", "max": round(worst, 2), "mean": round(mean, 3)},
    }
    add_entry(manifest_path, name, entry, [], "primary")
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="manifest holding --source")
    parser.add_argument("--source", default="l1", help="the one-step generator entry to quantise (%(default)s)")
    parser.add_argument("--name", default="l1_int8", help="the new entry; its file is <name>.onnx (%(default)s)")
    parser.add_argument("--data", type=Path, required=True, help="paired data in the released layout")
    parser.add_argument(
        "--split",
        type=Path,
        default=DEFAULT_SPLIT,
        help="split file; only its training cases calibrate (%(default)s)",
    )
    parser.add_argument("--slices", type=int, default=64, help="calibration slices (%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="which slices and noise (%(default)s)")
    parser.add_argument(
        "--out", type=Path, help="write an evaluation manifest here (a copy of --manifest plus the entry)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if args.slices < 1:
        parser.error("--slices must be at least 1")
    try:
        manifest = args.manifest.resolve()
        if args.out is not None:
            manifest = copy_manifest(manifest, args.out.resolve())
        entry = add_int8(manifest, args.source, args.name, args.data, args.split, args.slices, args.seed)
    except (TrainingError, ManifestError, SplitError, OSError) as err:
        LOG.error("%s", err)
        return 2
    LOG.info("wrote %s and entry %r in %s", entry["files"]["generator"]["path"], args.name, manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
