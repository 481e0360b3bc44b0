"""(Re)make the container test's stored data: the sample input, the expected results.json and sCT, the weights' hash.

The sample is one small head-and-neck phantom case in the template layout (made by `python -m phantoms`); the
expectations come from running this repository's process.py on the host (CPU), so the container test also checks
that the image reproduces the host pipeline. Rerun it whenever model_weights/ or the pipeline's output changes:

    python test/container/make_expected.py            # from the repository root, in the project's venv
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LOG = logging.getLogger("make_expected")

#: The phantom generator's arguments for the sample (one small HN case, seeded).
PHANTOM_ARGS = [
    "--regions",
    "HN",
    "--cases",
    "1",
    "--seed",
    "0",
    "--size",
    "small",
    "--template-layout",
    "--no-progress",
]
MAX_STORED_BYTES = 1_000_000


def weights_fingerprint(folder: Path) -> str:
    """sha256 of `sha256sum` over the folder's files in C order, as run_test.sh computes it inside the image."""
    lines = []
    for path in sorted(
        (p for p in folder.rglob("*") if p.is_file()), key=lambda p: str(p.relative_to(folder)).encode()
    ):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  ./{path.relative_to(folder).as_posix()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def to_container_paths(value: Any, host_input: Path, host_output: Path) -> Any:
    """The host run's results.json as the container writes it: host folders replaced by /input and /output."""
    if isinstance(value, dict):
        return {k: to_container_paths(v, host_input, host_output) for k, v in value.items()}
    if isinstance(value, list):
        return [to_container_paths(v, host_input, host_output) for v in value]
    if isinstance(value, str):
        for host, container in ((str(host_input), "/input"), (str(host_output), "/output")):
            if value == host or value.startswith(host + "/"):
                return container + value[len(host) :]
    return value


def write_smoke_model(path: Path) -> None:
    """A two-node ONNX model (y = 2x + 1) for the in-image ONNX Runtime check; made with the onnx package."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["doubled"]), helper.make_node("Add", ["doubled", "one"], ["y"])],
        "smoke",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 3, 4])],
        initializer=[
            numpy_helper.from_array(np.array(2.0, np.float32), "two"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="make_expected")
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)


def make_sample(source: Path | None, work: Path, phantom_extra: list[str]) -> Path:
    """The template-layout folder to store: a given one, or a fresh phantom case."""
    if source is not None:
        return source
    out = work / "phantom"
    command = [sys.executable, "-m", "phantoms", "--out", str(out), *PHANTOM_ARGS, *phantom_extra]
    LOG.info("%s", " ".join(command))
    subprocess.run(command, cwd=REPO, check=True)
    candidates = sorted({p.parent.parent.parent for p in out.rglob("images/mri/*") if p.is_file()})
    if len(candidates) != 1:
        raise SystemExit(f"{out}: expected one template-layout folder from the phantom generator, found {candidates}")
    return candidates[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="use this template-layout folder instead of a new phantom case")
    parser.add_argument(
        "--phantom-arg",
        action="append",
        default=[],
        dest="phantom_extra",
        help="extra argument for `python -m phantoms` (repeat it)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="make-expected-") as tmp:
        work = Path(tmp)
        sample = make_sample(args.source, work, args.phantom_extra)
        stored_input = HERE / "input"
        if stored_input.exists():
            shutil.rmtree(stored_input)
        (stored_input / "images").mkdir(parents=True)
        for part in ("mri", "body"):
            shutil.copytree(sample / "images" / part, stored_input / "images" / part)
        shutil.copy2(sample / "region.json", stored_input / "region.json")
        mr_files = sorted((stored_input / "images" / "mri").iterdir())
        if len(mr_files) != 1:
            raise SystemExit(f"{sample}: the sample must hold exactly one MR, found {len(mr_files)}")

        out = work / "out"
        sys.path.insert(0, str(REPO))  # run by path: the repository's modules
        from benchmarks.process_runner import run_process

        run = run_process(["--input", stored_input, "--output", out, "--device", "cpu", "--no-progress"])
        sys.stderr.write(run.log)
        if run.returncode != 0:
            raise SystemExit(f"process.py failed on the sample (exit {run.returncode})")

        shutil.copy2(out / "images" / "synthetic-ct" / mr_files[0].name, HERE / "expected_sct.mha")
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
        expected = to_container_paths(results, stored_input, out)
        (HERE / "expected_results.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")

    (HERE / "expected_weights.sha256").write_text(weights_fingerprint(REPO / "model_weights") + "\n", encoding="utf-8")
    write_smoke_model(HERE / "smoke.onnx")

    stored = [p for p in HERE.rglob("*") if p.is_file() and p.suffix in (".mha", ".json", ".onnx", ".sha256")]
    total = sum(p.stat().st_size for p in stored)
    for path in sorted(stored):
        LOG.info("%8d bytes  %s", path.stat().st_size, path.relative_to(REPO))
    if total > MAX_STORED_BYTES:
        raise SystemExit(f"the stored test data take {total} bytes (limit {MAX_STORED_BYTES}): make the sample smaller")
    LOG.info("stored %d bytes in %s", total, HERE.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
