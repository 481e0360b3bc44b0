"""Small builders shared by the pipeline tests: volumes on odd grids, tiny ONNX models, manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import SimpleITK as sitk
from onnx import TensorProto, helper, numpy_helper

from engine.manifest import sha256_of

ROTATED = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # x and y swapped, one flipped
PERMUTED = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # slices along a physical in-plane axis


def write_volume(
    path: Path, array: np.ndarray, spacing=(0.9, 1.1, 3.0), origin=(12.5, -30.0, 7.0), direction=ROTATED
) -> Path:
    """Write a (z, y, x) array as a compressed image with the given geometry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def body_phantom(shape=(11, 37, 29), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """An int16 MR with a smooth, asymmetric body and its mask (odd sizes on purpose)."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    inside = (x / 0.8) ** 2 + (y / 0.7) ** 2 < 1.0
    rng = np.random.default_rng(seed)
    mr = np.where(inside, 400 + 300 * x + 150 * y * y + 80 * z + rng.normal(0, 5, shape), 0)
    return mr.astype(np.int16), inside.astype(np.uint8)


def write_case(folder: Path, name="case1.mha", region="Thorax", shape=(11, 37, 29), **geometry) -> tuple[Path, Path]:
    """A template-layout input folder with one case; returns (mr, mask) paths."""
    mr, mask = body_phantom(shape)
    mr_path = write_volume(folder / "images" / "mri" / name, mr, **geometry)
    mask_path = write_volume(folder / "images" / "body" / name, mask, **geometry)
    (folder / "region.json").write_text(json.dumps(region))
    return mr_path, mask_path


def _centre_slice(context: int, name: str, source: str = "mr") -> list:
    starts = numpy_helper.from_array(np.array([context // 2], dtype=np.int64), f"{name}_s")
    ends = numpy_helper.from_array(np.array([context // 2 + 1], dtype=np.int64), f"{name}_e")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), f"{name}_a")
    node = helper.make_node("Slice", [source, f"{name}_s", f"{name}_e", f"{name}_a"], [name])
    return [node], [starts, ends, axes]


def onnx_model(path: Path, context: int = 1, behaviour: str = "centre") -> Path:
    """A tiny ONNX generator with the product's I/O contract (mr[B,C,H,W], optional noise -> ct[B,1,H,W]).

    behaviour: 'centre' passes the centre slice through; 'shift' moves it one pixel along x (orientation
    sensitive); 'stride4' only accepts H, W divisible by 4 (SpaceToDepth); 'noise' adds 0.1 * noise;
    'nan' outputs NaN; 'context' returns the mean of all slices (reads the 2.5D neighbours).
    """
    mr = helper.make_tensor_value_info("mr", TensorProto.FLOAT, ["B", context, "H", "W"])
    out = helper.make_tensor_value_info("ct", TensorProto.FLOAT, ["B", 1, "H", "W"])
    nodes, inits = _centre_slice(context, "centre")
    inputs = [mr]
    if behaviour == "centre":
        nodes.append(helper.make_node("Identity", ["centre"], ["ct"]))
    elif behaviour == "shift":
        weight = np.zeros((1, 1, 1, 3), dtype=np.float32)
        weight[0, 0, 0, 2] = 1.0
        inits.append(numpy_helper.from_array(weight, "w"))
        nodes.append(helper.make_node("Conv", ["centre", "w"], ["ct"], pads=[0, 1, 0, 1]))
    elif behaviour == "stride4":
        nodes += [
            helper.make_node("SpaceToDepth", ["centre"], ["packed"], blocksize=4),
            helper.make_node("DepthToSpace", ["packed"], ["ct"], blocksize=4),
        ]
    elif behaviour == "noise":
        inputs.append(helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["B", 1, "H", "W"]))
        inits.append(numpy_helper.from_array(np.array(0.1, dtype=np.float32), "scale"))
        nodes += [
            helper.make_node("Mul", ["noise", "scale"], ["scaled"]),
            helper.make_node("Add", ["centre", "scaled"], ["ct"]),
        ]
    elif behaviour == "nan":
        inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"))
        nodes += [
            helper.make_node("Mul", ["centre", "zero"], ["zeros"]),
            helper.make_node("Div", ["zeros", "zero"], ["ct"]),
        ]
    elif behaviour == "context":
        nodes = [helper.make_node("ReduceMean", ["mr"], ["ct"], keepdims=1, axes=[1])]
        inits = []
    else:
        raise ValueError(behaviour)
    graph = helper.make_graph(nodes, f"test_{behaviour}", inputs, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_manifest(folder: Path, models: dict, regions: dict | None = None, defaults: dict | None = None) -> Path:
    """A manifest in `folder`; each model's files get their real sha256 unless one is given."""
    for entry in models.values():
        for item in entry.get("files", {}).values():
            if "sha256" not in item:
                item["sha256"] = sha256_of(folder / item["path"])
    data = {
        "schema_version": 1,
        "defaults": defaults or {},
        "models": models,
        "regions": regions or {code: {"model": next(iter(models)), "fallback": None} for code in ("HN", "TH", "AB")},
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def identity_model_entry(context: int = 1, spacing=None, divisible_by: int = 1, path: str = "gen.onnx") -> dict:
    """A 'one_step' entry whose window maps the minmax-normalised MR [-1, 1] to [0, 1000] HU."""
    return {
        "kind": "one_step",
        "files": {"generator": {"path": path}},
        "spacing_xy_mm": spacing,
        "context_slices": context,
        "divisible_by": divisible_by,
        "mr_normalisation": {"clip_percentiles": [0.0, 100.0], "method": "minmax", "outside_value": -1.0},
        "ct_window_hu": [0.0, 1000.0],
        "output_dtype": "float32",
        "outside_fill_hu": -1000.0,
    }


def read_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def write_paired_case(root: Path, region: str, case_id: str, shape=(9, 40, 36), seed=0) -> Path:
    """A released-layout case (mr, ct, mask) whose CT is a known function of the MR: a learnable toy."""
    mr, mask = body_phantom(shape, seed)
    rng = np.random.default_rng(seed)
    bone = np.zeros(shape, dtype=bool)
    centre = (shape[1] // 2 + int(rng.integers(-3, 4)), shape[2] // 2 + int(rng.integers(-3, 4)))
    yy, xx = np.ogrid[: shape[1], : shape[2]]
    bone[:, (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < 16] = True
    mr = np.where(bone & (mask > 0), 50, mr).astype(np.int16)  # bone is dark in MR ...
    ct = np.where(mask > 0, 40.0, -1000.0)
    ct = np.where(bone & (mask > 0), 1200.0, ct).astype(np.int16)  # ... and bright in CT
    case = root / "Task1" / region / case_id
    geometry = dict(spacing=(1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0), direction=ROTATED)
    write_volume(case / "mr.mha", mr, **geometry)
    write_volume(case / "ct.mha", ct, **geometry)
    write_volume(case / "mask.mha", mask, **geometry)
    return case
