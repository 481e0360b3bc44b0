"""Fuzz: dozens of malformed inputs in one run, each held to the bad-input contract.

Every case of test/hostile.py FUZZ_CASES lies in one template folder beside good files; process.py runs once, in a
subprocess with a timeout (a read of a FIFO would hang it). For every case: one error line that names the broken
file and the problem, in the log and in results.json, no output file, and no traceback anywhere. The masks of
WARNED_CASES are slightly off the MR's grid: those cases run, and their results.json entry carries the warning.
The good cases beside them all are written.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.process_runner import run_process
from hostile import FUZZ_CASES, WARNED_CASES, build_fuzz_folder
from pipeline.cases import case_id_of
from preprocessing.errors import printable

REPO = Path(__file__).resolve().parents[1]


def test_every_malformed_input_fails_alone_with_one_line(tmp_path):
    folder = tmp_path / "in"
    made, warned = build_fuzz_folder(folder)
    assert len(made) >= 80
    out = tmp_path / "out"
    run = run_process(["--input", folder, "--output", out, "--model", "water", "--no-progress"], timeout=300)
    log = run.log
    assert run.returncode == 1, log[-3000:]
    assert "Traceback" not in log
    entries = json.loads((out / "results.json").read_text())
    results = {Path(entry["inputs"][0]["filename"]).name: entry for entry in entries}
    assert len(results) == len(entries) == len(made) + len(warned) + 2  # every case once, nothing else
    written = (
        {p.name for p in (out / "images" / "synthetic-ct").glob("*")}
        if (out / "images" / "synthetic-ct").is_dir()
        else set()
    )
    problems = []
    for name, (case, broken) in made.items():
        which, _, words = FUZZ_CASES[name]
        entry = results.get(case)
        if entry is None:
            problems.append(f"{name}: no results.json entry")
            continue
        messages = entry["error_messages"]
        if len(messages) != 1 or "\n" in messages[0]:
            problems.append(f"{name}: expected one error line, got {messages}")
            continue
        message = messages[0]
        if words not in message or printable(broken.name) not in message:
            problems.append(f"{name}: {message!r} lacks {words!r} or the file name {broken.name}")
        if message not in log:
            problems.append(f"{name}: the error is not in the log")
        if entry["outputs"] or f"{case_id_of(Path(case))}.mha" in written:
            problems.append(f"{name}: an output was written")
    for name, case in warned.items():
        entry = results.get(case, {})
        warnings = entry.get("warnings", [])
        if entry.get("error_messages") != [] or case not in written:
            problems.append(f"{name}: the case did not run ({entry.get('error_messages')})")
        if len(warnings) != 1 or WARNED_CASES[name][1] not in warnings[0] or case not in warnings[0]:
            problems.append(f"{name}: expected one warning with {WARNED_CASES[name][1]!r}, got {warnings}")
    assert not problems, "\n".join(problems)
    assert results["good.mha"]["error_messages"] == [] and "warnings" not in results["good.mha"]
    assert results["linked.mha"]["error_messages"] == []
    assert written == {"good.mha", "linked.mha", *warned.values()}  # nothing of any broken case
