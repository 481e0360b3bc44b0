"""Tests of the phantom generator: determinism, layout, dtypes, HU per tissue, mask rules, geometry, CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from phantoms import Rates, case_name, generate_case
from phantoms.generate import ORIENTATIONS, SIZES, PhantomError, _orient
from phantoms.masks import body_mask, dilate_disk_xy, fill_holes_xy
from phantoms.region_specs import region_spec
from phantoms.tissues import T
from phantoms.writer import write_dataset

REPO = Path(__file__).resolve().parents[1]
NO_IMPERFECTIONS = Rates(misalign=0, metal=0, arms=0, couch=0, banding=0)
ALL_IMPERFECTIONS = Rates(misalign=1, metal=1, arms=1, couch=1, banding=1)


def _arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def _interior(labels: np.ndarray, label: int, iterations: int = 1, fov: np.ndarray | None = None) -> np.ndarray:
    """Voxels of a tissue away from its border (no partial volume), inside the field of view when given."""
    inner = ndimage.binary_erosion(labels == label, iterations=iterations)
    return inner if fov is None else inner & fov


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("phantoms")
    folders = write_dataset(
        out, ["HN", "TH", "AB", "BRAIN", "PELVIS"], 2, seed=5, size="small", template_layout=True, progress=False
    )
    return out, folders


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_case_and_other_seed_differs():
    a = generate_case("TH", 1, seed=3, size="small")
    b = generate_case("TH", 1, seed=3, size="small")
    for name in ("mr", "ct", "mask"):
        ia, ib = getattr(a, name), getattr(b, name)
        assert np.array_equal(_arr(ia), _arr(ib))
        assert ia.GetOrigin() == ib.GetOrigin() and ia.GetDirection() == ib.GetDirection()
    c = generate_case("TH", 1, seed=4, size="small")
    assert _arr(a.ct).shape != _arr(c.ct).shape or not np.array_equal(_arr(a.ct), _arr(c.ct))


def test_more_cases_do_not_change_earlier_ones(tmp_path):
    small = write_dataset(tmp_path / "two", ["AB"], 2, seed=1, size="small", progress=False)
    large = write_dataset(tmp_path / "three", ["AB"], 3, seed=1, size="small", progress=False)
    assert [p.name for p in small] == [p.name for p in large[:2]]
    for a, b in zip(small, large):
        for name in ("mr.mha", "ct.mha", "mask.mha"):
            assert np.array_equal(_arr(sitk.ReadImage(str(a / name))), _arr(sitk.ReadImage(str(b / name))))


def test_rates_only_toggle_their_feature():
    plain = generate_case("AB", 0, seed=2, size="small", rates=NO_IMPERFECTIONS)
    couch = generate_case("AB", 0, seed=2, size="small", rates=Rates(misalign=0, metal=0, arms=0, couch=1, banding=0))
    assert plain.info["imperfections"]["couch"] is False and couch.info["imperfections"]["couch"] is True
    assert np.array_equal(_arr(plain.mr), _arr(couch.mr))  # the couch is in the CT only
    assert np.array_equal(plain.labels, couch.labels)


# ------------------------------------------------------------------------------------------ layout, names, dtypes
def test_released_layout_ids_and_dtypes(dataset):
    out, folders = dataset
    assert len(folders) == 10
    pattern_2025 = re.compile(r"^1(HN|TH|AB)([A-D])(\d{3})$")
    pattern_2023 = re.compile(r"^1([BP])([A-C])(\d{3})$")
    folder_names = {"HN": "HN", "TH": "TH", "AB": "AB", "B": "brain", "P": "pelvis"}
    for folder in folders:
        assert folder.parent.parent == out / "Task1"
        m = pattern_2025.match(folder.name) or pattern_2023.match(folder.name)
        assert m, folder.name
        assert folder.parent.name == folder_names[m.group(1)]
        spec = region_spec(folder.parent.name)
        assert m.group(2) in spec.centres
        assert sorted(p.name for p in folder.iterdir()) == ["ct.mha", "mask.mha", "mr.mha"]
        images = [sitk.ReadImage(str(folder / n)) for n in ("mr.mha", "ct.mha", "mask.mha")]
        for image in images:
            assert image.GetPixelID() == sitk.sitkInt16
            assert image.GetSize() == images[0].GetSize()
            assert image.GetSpacing() == images[0].GetSpacing()
            assert image.GetOrigin() == images[0].GetOrigin()
            assert image.GetDirection() == images[0].GetDirection()
        assert set(np.unique(_arr(images[2]))) <= {0, 1}
        header = (folder / "ct.mha").read_bytes()[:1000].decode("latin-1")
        assert "CompressedData = True" in header
    manifest = json.loads((out / "phantoms.json").read_text())
    assert len(manifest["cases"]) == 10 and manifest["seed"] == 5


def test_case_numbers_count_per_centre():
    names = [case_name("HN", i, 0) for i in range(12)]
    seen: dict[str, int] = {}
    for cid, centre in names:
        seen[centre] = seen.get(centre, 0) + 1
        assert cid == f"1HN{centre}{seen[centre]:03d}"
    assert len({c for _, c in names}) > 1


def test_template_layout(dataset):
    out, folders = dataset
    for folder in folders:
        cid = folder.name
        t = out / "template" / cid
        mri, body = t / "images" / "mri" / f"{cid}.mha", t / "images" / "body" / f"{cid}.mha"
        assert mri.read_bytes() == (folder / "mr.mha").read_bytes()
        assert body.read_bytes() == (folder / "mask.mha").read_bytes()
        region = json.loads((t / "region.json").read_text())
        expected = {"HN": "Head and Neck", "TH": "Thorax", "AB": "Abdomen", "brain": "Brain", "pelvis": "Pelvis"}
        assert region == expected[folder.parent.name]
        assert (t / "region.json").read_text().startswith('"')


def test_product_and_evaluator_read_the_layout(dataset):
    from evaluation.pairing import find_ground_truth
    from pipeline.cases import released_cases, template_cases

    out, folders = dataset
    cases = released_cases(out / "Task1", out / "pred")
    assert sorted(c.case_id for c in cases) == sorted(p.name for p in folders)
    assert all(c.region_error is None and c.mask.is_file() for c in cases)
    gt, problems = find_ground_truth(out / "Task1")
    assert not problems and sorted(gt) == sorted(p.name for p in folders)
    codes = {"HN": "HN", "TH": "TH", "AB": "AB", "brain": "BRAIN", "pelvis": "PELVIS"}
    assert all(gt[p.name].region == codes[p.parent.name] for p in folders)
    one = out / "template" / folders[0].name
    tcases = template_cases(one, out / "pred_t")
    assert len(tcases) == 1 and tcases[0].region_error is None


# ------------------------------------------------------------------------------------------ geometry
def test_sizes_and_spacing_of_full_cases():
    case = generate_case("HN", 0, seed=0, rates=NO_IMPERFECTIONS)
    spacing = case.ct.GetSpacing()
    assert sorted(spacing) == [1.0, 1.0, 3.0]
    # slices along the 3 mm axis, in-plane along the 1 mm axes (whatever order the scanner stored them in)
    size = case.ct.GetSize()
    inplane = [n for n, s in zip(size, spacing) if s == 1.0]
    slices = [n for n, s in zip(size, spacing) if s == 3.0][0]
    assert all(200 <= n <= 520 for n in inplane), size
    assert 40 <= slices <= 130, size
    assert any(abs(v) > 1 for v in case.ct.GetOrigin())
    small = generate_case("HN", 0, seed=0, size="small", rates=NO_IMPERFECTIONS)  # same patient at any voxel size
    assert small.case_id == case.case_id and small.info["patient"] == case.info["patient"]
    assert small.info["slab_mm_below_vertex"] == pytest.approx(case.info["slab_mm_below_vertex"], abs=10)


def test_some_directions_are_not_identity():
    dirs = {generate_case(r, i, seed=0, size="small").info["orientation"] for r in ("HN", "AB") for i in range(8)}
    assert "identity" in dirs and len(dirs) > 1


@pytest.mark.parametrize("choice", ORIENTATIONS, ids=[o[0] for o in ORIENTATIONS])
def test_orientation_keeps_every_voxel_at_its_physical_place(choice):
    rng = np.random.default_rng(0)
    canon = rng.integers(0, 1000, size=(5, 7, 9)).astype(np.int16)
    spacing, origin = (0.8, 1.3, 3.0), (-12.0, 40.0, -300.0)
    (arr,), sp, org, direction = _orient([canon], spacing, origin, choice)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(sp)
    img.SetOrigin(org)
    img.SetDirection(direction)
    ref = sitk.GetImageFromArray(canon)
    ref.SetSpacing(spacing)
    ref.SetOrigin(origin)
    for _ in range(30):
        idx = [int(rng.integers(0, n)) for n in img.GetSize()]
        point = img.TransformIndexToPhysicalPoint(idx)
        ref_idx = ref.TransformPhysicalPointToIndex(point)
        assert img[idx] == ref[ref_idx]
    assert np.array_equal(_arr(sitk.DICOMOrient(img, "LPS")), canon)


# ------------------------------------------------------------------------------------------ CT numbers per tissue
def test_ct_numbers_per_tissue_small():
    th = generate_case("TH", 0, seed=0, size="small", rates=NO_IMPERFECTIONS)
    ct, lab, fov = _arr(th.ct).astype(float), th.labels, th.fov
    assert ct.min() >= -1024 and ct.max() <= 3071
    lung = ct[_interior(lab, T.LUNG, fov=fov)]
    assert lung.size > 100 and -870 <= np.median(lung) <= -650
    fat = ct[_interior(lab, T.FAT_SC, fov=fov)]
    assert fat.size > 50 and -130 <= np.median(fat) <= -60
    muscle = ct[_interior(lab, T.MUSCLE, fov=fov)]
    assert 15 <= np.median(muscle) <= 75
    outside = ct[(lab == T.AIR) & th.fov & ~ndimage.binary_dilation(lab > 0, iterations=2)]
    assert outside.size > 100 and -1024 <= np.median(outside) <= -960
    assert (ct > 700).any()  # bone survives partial volume even at 5 mm


def test_ct_numbers_full_resolution_head():
    hn = generate_case("HN", 2, seed=1, rates=NO_IMPERFECTIONS)
    ct, lab, fov = _arr(hn.ct).astype(float), hn.labels, hn.fov
    cortical = ct[_interior(lab, T.CORTICAL_DENSE, fov=fov)]
    assert cortical.size > 100 and 800 <= np.median(cortical) <= 1900
    marrow = ct[_interior(lab, T.MARROW, fov=fov)]
    assert 150 <= np.median(marrow) <= 450
    teeth = ct[_interior(lab, T.TEETH, fov=fov)]
    assert teeth.size > 0 and 1800 <= np.median(teeth) <= 3071
    brain = ct[_interior(lab, T.GM, 2, fov) | _interior(lab, T.WM, 2, fov)]
    assert 20 <= np.median(brain) <= 50
    sinus = ct[_interior(lab, T.GAS, fov=fov)]
    assert sinus.size > 0 and np.median(sinus) < -900


def test_mr_air_and_cortical_bone_are_both_dark():
    hn = generate_case("HN", 0, seed=3, size="small", rates=NO_IMPERFECTIONS)
    mr, lab = _arr(hn.mr).astype(float), hn.labels
    body = np.median(mr[_interior(lab, T.FAT_SC) | _interior(lab, T.MUSCLE) | _interior(lab, T.GM)])
    assert np.median(mr[lab == T.CORTICAL_DENSE]) < 0.6 * body
    assert np.median(mr[(lab == T.AIR) & hn.fov]) < 0.25 * body
    assert (mr >= 0).all() and (mr[~hn.fov] == 0).all()


# ------------------------------------------------------------------------------------------ mask rules
@pytest.mark.parametrize("region", ["TH", "PELVIS"])
def test_mask_rules(region):
    preset = SIZES["small"]
    case = generate_case(region, 1, seed=0, size="small", rates=NO_IMPERFECTIONS)
    mr, ct, mask, lab, fov = _arr(case.mr), _arr(case.ct), _arr(case.mask), case.labels, case.fov
    # outside the field of view: CT -1000, MR 0, mask 0
    assert (ct[~fov] == -1000).all() and (mr[~fov] == 0).all() and (mask[~fov] == 0).all()
    assert (mask[fov] == 1).any()
    # the crop: mask bounding box plus the margins (in voxels) on every side
    zaxis = int(np.argmax(np.array(case.ct.GetSpacing())[::-1]))  # the slice axis (3x coarser)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.nonzero(mask.any(axis=other))[0]
        margin = preset.margin_z if axis == zaxis else preset.margin_xy
        assert idx[0] == margin and mask.shape[axis] - 1 - idx[-1] == margin
    # dilated beyond the body, by about `dilate_xy` voxels in-plane and never more
    body = (lab > 0) & fov
    assert (mask.astype(bool) & ~body).sum() > 0.1 * body.sum()
    slices = np.moveaxis(body, zaxis, 0)
    m = np.moveaxis(mask.astype(bool), zaxis, 0)
    f = np.moveaxis(fov, zaxis, 0)
    for k in range(slices.shape[0]):
        if not slices[k].any():
            continue
        # the mask thresholds the partial-volume-blurred MR: its edge can sit a voxel outside the labelled body,
        # and the slice profile brings in the neighbouring slices' anatomy
        near_body = slices[max(k - 1, 0) : k + 2].any(axis=0)
        dist = ndimage.distance_transform_edt(~near_body)
        assert dist[m[k]].max() <= preset.dilate_xy + 1.5
        dist_k = ndimage.distance_transform_edt(~slices[k])
        near = (dist_k <= preset.dilate_xy - 1) & f[k]
        assert m[k][near].mean() > 0.97


def test_mask_algorithm_on_a_synthetic_volume():
    z, y, x = np.mgrid[0:6, 0:60, 0:60]
    body = ((y - 30) ** 2 + (x - 30) ** 2) < 15**2
    hole = ((y - 30) ** 2 + (x - 30) ** 2) < 5**2  # dark "lung" inside: filled
    speck = (y == 3) & (x == 3)  # isolated bright noise: removed
    mr = np.where(body & ~hole, 100.0, 0.0) + np.where(speck, 100.0, 0.0)
    fov = np.ones(mr.shape, bool)
    fov[:, :, 50:] = False
    m = body_mask(mr, fov, dilate_xy=4)
    assert m[:, 30, 30].all()  # hole filled
    assert not m[:, 3, 3].any()  # speck gone
    assert not m[:, :, 50:].any()  # limited to the field of view
    # the disc's edge is at x = 16 (r < 15): the dilation reaches 4 voxels further, to x = 12, and no further
    assert m[:, 30, 12].all() and m[:, 12, 30].all() and not m[:, 30, 11].any() and not m[:, 11, 30].any()
    assert np.array_equal(fill_holes_xy(body & ~hole), body)


def test_disk_dilation_is_within_one_voxel_of_a_disk():
    m = np.zeros((1, 61, 61), bool)
    m[0, 30, 30] = True
    yy, xx = np.mgrid[-30:31, -30:31]
    dist = np.hypot(yy, xx)
    for r in (2, 3, 6, 10):
        d = dilate_disk_xy(m, r)[0]
        assert dist[d].max() <= r + 1 and dist[~d].min() >= r - 1e-9


# ------------------------------------------------------------------------------------------ imperfections
def test_imperfections_when_forced():
    hn = generate_case("HN", 0, seed=0, size="small", rates=ALL_IMPERFECTIONS)
    imp = hn.info["imperfections"]
    assert imp["metal"] and imp["misalignment"] and imp["couch"]
    assert (hn.labels == T.METAL).any()
    ct = _arr(hn.ct)
    assert ct.max() == 3071
    hip = generate_case("PELVIS", 0, seed=0, size="small", rates=ALL_IMPERFECTIONS)
    assert hip.info["imperfections"]["metal"] == ["hip implant"]
    metal = hip.labels == T.METAL
    mr = _arr(hip.mr).astype(float)
    assert np.median(mr[metal]) < 0.2 * np.median(mr[_interior(hip.labels, T.MUSCLE)])
    arms = [
        generate_case("TH", i, seed=0, size="small", rates=ALL_IMPERFECTIONS).info["imperfections"]["arms"]
        for i in range(3)
    ]
    assert all(a in ("both", "ct_only", "mr_only") for a in arms)
    plain = generate_case("HN", 0, seed=0, size="small", rates=NO_IMPERFECTIONS)
    assert not any(plain.info["imperfections"].values())


# ------------------------------------------------------------------------------------------ errors and CLI
def test_bad_arguments_raise_clear_errors():
    with pytest.raises(PhantomError, match="size"):
        generate_case("HN", 0, size="huge")
    with pytest.raises(PhantomError, match="spacing"):
        generate_case("HN", 0, spacing=(1, 0, 3))
    with pytest.raises(PhantomError, match="rate"):
        generate_case("HN", 0, rates=Rates(metal=1.5))
    with pytest.raises(ValueError, match="region"):
        generate_case("KNEE", 0)


def test_cli(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "phantoms",
        "--out",
        str(tmp_path / "d"),
        "--regions",
        "th,Pelvis",
        "--cases",
        "1",
        "--size",
        "small",
        "--template-layout",
        "--overview",
        "--no-progress",
        "--seed",
        "7",
    ]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    mr = sorted((tmp_path / "d" / "Task1").glob("*/*/mr.mha"))
    assert [p.parent.parent.name for p in mr] == ["TH", "pelvis"]
    assert len(list((tmp_path / "d" / "overview").glob("*.png"))) == 2
    assert len(list((tmp_path / "d" / "template").glob("*/region.json"))) == 2
    bad = subprocess.run(
        [sys.executable, "-m", "phantoms", "--out", str(tmp_path / "e"), "--regions", "KNEE"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "KNEE" in bad.stderr
