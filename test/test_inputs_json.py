"""grand-challenge's /input/inputs.json: sockets (or their older interface name) name the MR, the mask and the region."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import process
from sct_testing import write_case


def results_of(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())


def socket(slug: str, kind: str, relative_path: str) -> dict:
    return {"slug": slug, "kind": kind, "relative_path": relative_path, "title": slug, "super_kind": "Image"}


def platform_inputs(mr_slug="mri", mask_slug="body", region_value="Head and Neck", key="socket") -> list[dict]:
    """Shaped like the platform's: one entry per socket, with both names on new jobs and `image`/`value` set."""
    entries = [
        {
            key: socket(mr_slug, "Image", "images/mri"),
            "image": {"pk": "a1", "name": "1HNA001.mha"},
            "value": None,
            "file": None,
            "pk": 1,
        },
        {
            key: socket(mask_slug, "Segmentation", "images/body"),
            "image": {"pk": "a2", "name": "mask.mha"},
            "value": None,
            "file": None,
            "pk": 2,
        },
    ]
    if region_value is not None:
        entries.append(
            {
                key: socket("region", "String", "region.json"),
                "value": region_value,
                "image": None,
                "file": None,
                "pk": 3,
            }
        )
    if key == "socket":
        for entry in entries:
            entry["interface"] = entry["socket"]
    return entries


def _job(tmp_path: Path, inputs: list[dict] | str, region_file="Head and Neck", mask_name="other_name.mha") -> Path:
    folder = tmp_path / "input"
    write_case(folder, name="1HNA001.mha", region=region_file)
    (folder / "images" / "body" / "1HNA001.mha").rename(folder / "images" / "body" / mask_name)
    (folder / "inputs.json").write_text(inputs if isinstance(inputs, str) else json.dumps(inputs))
    return folder


@pytest.mark.parametrize("variant", ["socket", "interface", "aliases"])
def test_a_platform_job_runs_from_its_sockets(tmp_path, monkeypatch, variant):
    inputs = (
        platform_inputs(key="interface")
        if variant == "interface"
        else (platform_inputs("mr-image", "body-mask") if variant == "aliases" else platform_inputs())
    )
    folder = _job(tmp_path, inputs)  # the mask's file name differs from the MR's: only the socket pairs them
    monkeypatch.setattr(process, "CONTAINER_INPUT", folder)
    monkeypatch.setattr(process, "CONTAINER_OUTPUT", tmp_path / "output")
    assert process.main(["--no-progress", "--model", "water"]) == 0
    (entry,) = results_of(tmp_path / "output")
    assert entry["error_messages"] == []
    assert Path(entry["inputs"][1]["filename"]).name == "other_name.mha"
    assert (tmp_path / "output" / "images" / "synthetic-ct" / "1HNA001.mha").is_file()


def test_the_region_comes_from_the_socket_value(tmp_path, monkeypatch):
    folder = _job(tmp_path, platform_inputs(region_value="Thorax"), region_file="Thorax")
    (folder / "region.json").unlink()
    assert (
        process.main(["--input", str(folder), "--output", str(tmp_path / "out"), "--no-progress", "--model", "water"])
        == 0
    )


@pytest.mark.parametrize(
    "problem, words",
    [
        ("no mask socket", "no socket for the mask"),
        ("two images", "holds 2 images"),
        ("region disagrees", "but region.json says"),
        ("not json", "cannot read inputs.json"),
        ("path escapes", "not a path inside /input"),
    ],
)
def test_a_mismatch_between_inputs_json_and_the_files_is_one_line(tmp_path, problem, words):
    inputs = platform_inputs()
    if problem == "no mask socket":
        inputs = [e for e in inputs if e["socket"]["slug"] != "body"]
    if problem == "path escapes":
        inputs[0]["socket"]["relative_path"] = "../etc"
    folder = _job(
        tmp_path,
        "{not json" if problem == "not json" else inputs,
        region_file="Thorax" if problem == "region disagrees" else "Head and Neck",
    )
    if problem == "two images":
        write_case(folder, name="second.mha", region="Head and Neck")
    assert (
        process.main(["--input", str(folder), "--output", str(tmp_path / "out"), "--no-progress", "--model", "water"])
        == 1
    )
    (entry,) = results_of(tmp_path / "out")
    (message,) = entry["error_messages"]
    assert words in message and "inputs.json" in message and "\n" not in message
    assert not (tmp_path / "out" / "images" / "synthetic-ct").is_dir() or not any(
        (tmp_path / "out" / "images" / "synthetic-ct").iterdir()
    )
