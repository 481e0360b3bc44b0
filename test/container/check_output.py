"""Check what the container wrote against the stored expectations (used by run_test.sh; runs on the host or in the image).

Two modes:
  ok      a good run: results.json equals the expected one, exactly one sCT named like the MR, written compressed,
          on the MR's grid (size, spacing, origin, direction) and within --tolerance-hu of the stored expected sCT.
  failed  a malformed input: no sCT and no partial file anywhere under the output, results.json (when written)
          reports the case with no outputs and an error naming the MR file, and the log names the MR file too.

Every check prints one PASS/FAIL line; the exit status is 1 when any check failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: Geometry must match to this (spacing/origin in mm, direction cosines): the sCT carries the MR's header.
GRID_ATOL = 1e-5


class Checker:
    """Collects PASS/FAIL lines so every check runs and the summary names all failures."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        line = f"{'PASS' if ok else 'FAIL'}: {what}" + (f" ({detail})" if detail else "")
        print(line, flush=True)
        if not ok:
            self.failures.append(what)
        return ok


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def mha_is_compressed(path: Path) -> bool:
    """A MetaImage header says CompressedData = True before its ElementDataFile line."""
    header = path.read_bytes()[:4096].split(b"ElementDataFile", 1)[0].decode("latin-1")
    for line in header.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "CompressedData":
            return value.strip().lower() == "true"
    return False


def grid_of(image: sitk.Image) -> dict[str, tuple]:
    return {
        "size": tuple(image.GetSize()),
        "spacing": tuple(image.GetSpacing()),
        "origin": tuple(image.GetOrigin()),
        "direction": tuple(image.GetDirection()),
    }


def check_ok(args: argparse.Namespace, c: Checker) -> None:
    """A good run: results, file name, compression, grid and voxel values."""
    mr_files = sorted((args.input / "images" / "mri").iterdir())
    if not c.check(len(mr_files) == 1, "the sample input holds one MR", ", ".join(p.name for p in mr_files)):
        return
    mr_path = mr_files[0]

    results_path = args.output / "results.json"
    if c.check(results_path.is_file(), "results.json written"):
        got, expected = read_json(results_path), read_json(args.expected_results)
        c.check(
            got == expected,
            "results.json equals the expected one",
            "" if got == expected else f"got {json.dumps(got)}; expected {json.dumps(expected)}",
        )

    sct_dir = args.output / "images" / "synthetic-ct"
    written = files_under(args.output / "images")
    expected_file = sct_dir / mr_path.name
    c.check(
        written == [expected_file],
        "exactly one image written, named like the MR",
        ", ".join(str(p.relative_to(args.output)) for p in written) or "none",
    )
    if not expected_file.is_file():
        return
    c.check(mha_is_compressed(expected_file), "the sCT is written compressed")

    mr, sct, ref = (
        sitk.ReadImage(str(mr_path)),
        sitk.ReadImage(str(expected_file)),
        sitk.ReadImage(str(args.expected_sct)),
    )
    mr_grid, sct_grid = grid_of(mr), grid_of(sct)
    c.check(sct_grid["size"] == mr_grid["size"], "sCT size equals the MR's", f"{sct_grid['size']} vs {mr_grid['size']}")
    for key in ("spacing", "origin", "direction"):
        same = np.allclose(sct_grid[key], mr_grid[key], rtol=0.0, atol=GRID_ATOL)
        c.check(same, f"sCT {key} equals the MR's", "" if same else f"{sct_grid[key]} vs {mr_grid[key]}")
    c.check(
        sct.GetPixelIDTypeAsString() == ref.GetPixelIDTypeAsString(),
        "sCT pixel type equals the expected sCT's",
        f"{sct.GetPixelIDTypeAsString()} vs {ref.GetPixelIDTypeAsString()}",
    )
    got, want = sitk.GetArrayViewFromImage(sct).astype(np.float64), sitk.GetArrayViewFromImage(ref).astype(np.float64)
    if c.check(got.shape == want.shape, "sCT shape equals the expected sCT's", f"{got.shape} vs {want.shape}"):
        diff = np.abs(got - want)
        c.check(
            bool(diff.max() <= args.tolerance_hu),
            f"sCT within {args.tolerance_hu:g} HU of the expected sCT",
            f"max |diff| {diff.max():.3f} HU, mean {diff.mean():.4f} HU, {int((diff > 0).sum())} voxel(s) differ",
        )


def check_failed(args: argparse.Namespace, c: Checker) -> None:
    """A malformed input: clear error, no image, no partial file."""
    mr_container_path = f"{args.container_input}/images/mri/{args.mr_name}"
    results_path = args.output / "results.json"
    leftovers = [p for p in files_under(args.output) if p != results_path]
    c.check(
        not leftovers,
        "no image and no partial file left in the output",
        ", ".join(str(p.relative_to(args.output)) for p in leftovers),
    )
    if results_path.is_file():
        entries = read_json(results_path)
        entry = entries[0] if isinstance(entries, list) and len(entries) == 1 else None
        c.check(entry is not None, "results.json holds the one case")
        if entry is not None:
            c.check(entry.get("outputs") == [], "results.json lists no output for it")
            errors = entry.get("error_messages") or []
            c.check(
                any(mr_container_path in e for e in errors),
                "results.json's error names the MR file",
                "; ".join(errors) or "no error message",
            )
    log = args.log.read_text(encoding="utf-8", errors="replace") if args.log else ""
    if args.log:
        lines = [line for line in log.splitlines() if mr_container_path in line and "ERROR" in line]
        c.check(bool(lines), "the log has an ERROR line naming the MR file", lines[0].strip() if lines else "none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("ok", "failed"))
    parser.add_argument("--input", type=Path, required=True, help="the sample input folder (template layout)")
    parser.add_argument("--output", type=Path, required=True, help="what the container wrote to /output")
    parser.add_argument("--expected-results", type=Path, help="ok: the expected results.json")
    parser.add_argument("--expected-sct", type=Path, help="ok: the expected sCT")
    parser.add_argument(
        "--tolerance-hu", type=float, default=1.0, help="ok: max |sCT - expected| (default: %(default)s)"
    )
    parser.add_argument("--mr-name", help="failed: the MR file name in images/mri")
    parser.add_argument("--log", type=Path, help="failed: the container's log (stdout + stderr)")
    parser.add_argument("--container-input", default="/input", help="where the input is mounted (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode == "ok" and (args.expected_results is None or args.expected_sct is None):
        parser.error("ok needs --expected-results and --expected-sct")
    if args.mode == "failed" and args.mr_name is None:
        parser.error("failed needs --mr-name")
    checker = Checker()
    (check_ok if args.mode == "ok" else check_failed)(args, checker)
    if checker.failures:
        print(f"{len(checker.failures)} check(s) failed: {'; '.join(checker.failures)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
