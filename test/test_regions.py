"""The region table (engine/regions.json) is the one list of regions: a region added there reaches every tool."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import process
from engine import regions
from engine.regions import REGIONS, Region, accepted_values, canonical_region, default_regions
from evaluation.__main__ import main as evaluate
from evaluation.pairing import find_ground_truth, region_from_id
from evaluation.segmentation import scored_prefixes
from phantoms import write_dataset
from phantoms.__main__ import build_parser as phantom_parser
from training.config import DataConfig

REPO = Path(__file__).resolve().parents[1]
CODES = {text for row in REGIONS.values() for name in (row.code, row.folder) for text in (name, name.lower())}


@pytest.fixture
def knee(monkeypatch) -> Region:
    """A made-up region added to the table only: its phantoms look like a thorax, on a stream of their own."""
    row = Region(
        code="KN",
        name="Knee",
        edition=2025,
        folder="knee",
        id_letters="KN",
        aliases=("knees",),
        scored_structures=("femur", "patella"),
        phantom={**REGIONS["TH"].phantom, "seed_key": 9},
    )
    monkeypatch.setitem(regions.REGIONS, row.code, row)
    return row


def test_a_region_added_to_the_table_reaches_the_engine_phantoms_trainer_and_evaluator(knee, tmp_path):
    # engine: every spelling, the messages, a manifest route
    assert canonical_region("Knee") == canonical_region(" KNEES ") == canonical_region("kn") == "KN"
    assert '"Knee"' in accepted_values() and '"KN"' in accepted_values()
    # trainer and phantom generator: a region of the current edition is in their default set
    assert "KN" in default_regions() and "KN" in DataConfig().regions
    assert phantom_parser().parse_args(["--out", str(tmp_path), "--regions", "Knee,HN"]).regions == ["KN", "HN"]

    # phantoms: its folder, its ID letters, its name in region.json
    (folder,) = write_dataset(tmp_path / "data", ["knee"], cases=1, seed=0, size="small", template_layout=True)
    assert folder.parent.name == "knee" and folder.name.startswith("1KN")
    assert json.loads(next((tmp_path / "data").rglob("region.json")).read_text()) == "Knee"

    # process.py: the released layout's folder names the region, the manifest routes it
    weights = tmp_path / "weights"
    weights.mkdir()
    manifest = {"schema_version": 1, "models": {"w": {"kind": "water"}}, "regions": {"Knee": {"model": "w"}}}
    (weights / "manifest.json").write_text(json.dumps(manifest))
    args = ["--input", str(tmp_path / "data" / "Task1"), "--output", str(tmp_path / "out"), "--no-progress"]
    assert process.main([*args, "--manifest", str(weights / "manifest.json")]) == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())[0]["inputs"][2]["value"] == "KN"

    # evaluator: region from the folder and from the ID, reported per region, its scored structures
    cases, problems = find_ground_truth(tmp_path / "data")
    assert not problems and {case.region for case in cases.values()} == {"KN"}
    assert region_from_id("1KNA001") == "KN" and region_from_id("1kna001") == "KN"
    assert scored_prefixes("KN") == ("femur", "patella")
    report_args = ["--pred", str(tmp_path / "out"), "--gt", str(tmp_path / "data"), "--out", str(tmp_path / "r")]
    assert evaluate([*report_args, "--no-plots", "--strict"]) == 0
    assert list(json.loads((tmp_path / "r" / "metrics.json").read_text())["regions"]) == ["KN"]


def test_without_the_added_region_nothing_knows_it():
    """The counterpart of the test above: the table decides, not a list kept elsewhere."""
    with pytest.raises(regions.RegionError):
        canonical_region("Knee")
    assert region_from_id("1KNA001") == "unknown" and scored_prefixes("KN") == ()
    assert (
        region_from_id("1HNA001") == "HN"
        and region_from_id("1BA001") == "BRAIN"
        and region_from_id("1PC012") == "PELVIS"
    )
    assert default_regions() == ("HN", "TH", "AB")


def _region_collections(path: Path) -> list[tuple[int, list[str]]]:
    """Lists, tuples, sets and dict keys in a Python file that name two or more regions literally."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [key for key in node.keys if key is not None]
        else:
            continue
        named = [item.value for item in items if isinstance(item, ast.Constant) and item.value in CODES]
        if len(named) >= 2:
            found.append((node.lineno, named))
    return found


def test_no_python_file_keeps_its_own_list_of_regions():
    """HN/TH/AB (and brain, pelvis) are listed once, in engine/regions.json; tests may spell out what they expect."""
    offenders = {}
    for path in sorted(REPO.rglob("*.py")):
        relative = path.relative_to(REPO)
        if relative.parts[0] in ("test", "docs", "data", "runs") or relative.parts[0].startswith("."):
            continue
        if found := _region_collections(path):
            offenders[str(relative)] = found
    assert not offenders, f"region lists outside engine/regions.json: {offenders}"


def test_a_table_whose_spellings_collide_is_refused(tmp_path):
    data = json.loads(regions.TABLE.read_text())
    data["regions"][1]["aliases"] = ["HN"]  # the thorax claiming head and neck's code
    (tmp_path / "regions.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'TH' repeats a code or spelling"):
        regions.load_table(tmp_path / "regions.json")
