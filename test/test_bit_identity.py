"""Same bytes as before a refactor: phantoms of both challenge editions and the water model's sCT, by stored hash.

The hashes are of the arrays (not of the compressed files) and were made before the region table and the kind
registry replaced their literal lists (commit 215c621), so a changed seed stream, case ID, centre, folder or
pipeline geometry shows up here. Network outputs are left to the container test's 1-HU check: ONNX Runtime's CPU
kernels differ between instruction sets, so a stored hash of them would fail on another machine.
"""

from __future__ import annotations

import hashlib

import pytest
import SimpleITK as sitk

import process
from phantoms import write_dataset

#: region -> (case ID, sha256 of the mr, ct and mask arrays, sha256 of the water model's sCT array)
EXPECTED = {
    "HN": (
        "1HND001",
        "4a52f58c29d38648b2eea5d039f1be010b0c07bdfae7aafef6b7ef7ca4031035",
        "91b77460a40169bd575d8e792710b2d1e9fdcf2b20899ec2e05b9086a2525ac5",
    ),
    "BRAIN": (
        "1BB001",
        "b3b3994485d91b4396af73d62b526b032eee690083cdbfa7788f942471eda8a6",
        "b1eef5cb452454f5ab5659e40054a8cb5cbec3481ffd131a923fa8b35fce8d50",
    ),
}


def _array_digest(*paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("region", sorted(EXPECTED))
def test_a_phantom_and_its_water_sct_keep_their_bytes(region, tmp_path):
    case_id, phantom_digest, water_digest = EXPECTED[region]
    (folder,) = write_dataset(tmp_path, [region], cases=1, seed=11, size="small", progress=False)
    assert folder.name == case_id
    assert _array_digest(folder / "mr.mha", folder / "ct.mha", folder / "mask.mha") == phantom_digest
    out = tmp_path / "sct.mha"
    args = ["--mr", folder / "mr.mha", "--mask", folder / "mask.mha", "--region", region, "--out", out]
    assert process.main([str(a) for a in args] + ["--model", "water", "--no-progress"]) == 0
    assert _array_digest(out) == water_digest
