"""Write the model tarball that grand-challenge extracts to /opt/ml/model/: the manifest and the files it names.

    python3 scripts/model_tarball.py --manifest model_weights/manifest.json --out model.tar.gz

Upload it as the algorithm's model (separately from the image): the container then uses its manifest instead of
the baked-in one, so weights change without rebuilding or re-uploading the image. Every file's sha256 is checked
before it is packed; the archive is reproducible (sorted names, zero times and owners). Standard library only, so
export.sh can call it with any python3. Prints the archive's path and size.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path


def named_files(manifest_path: Path) -> list[tuple[str, Path]]:
    """(name in the archive, file) for every file the manifest names, checked against its sha256."""
    data = json.loads(manifest_path.read_text())
    root = manifest_path.parent.resolve()
    files: dict[str, Path] = {}
    for name, entry in sorted(data.get("models", {}).items()):
        for role, item in sorted((entry.get("files") or {}).items()):
            path = (root / item["path"]).resolve()
            if root not in path.parents:
                raise SystemExit(f"{manifest_path}: model {name!r} file {item['path']!r} lies outside {root}")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != item["sha256"]:
                raise SystemExit(f"{path}: sha256 {digest} does not match the manifest ({item['sha256']})")
            files[str(path.relative_to(root))] = path
    return sorted(files.items())


def write_tarball(manifest_path: Path, out: Path) -> int:
    members = [("manifest.json", manifest_path)] + named_files(manifest_path)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, path in members:
            info = tarfile.TarInfo(name)
            content = path.read_bytes()
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            archive.addfile(info, io.BytesIO(content))
    partial = out.with_name(out.name + ".partial")
    with open(partial, "wb") as handle, gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) as zipped:
        zipped.write(buffer.getvalue())
    partial.replace(out)
    return out.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=Path("model_weights/manifest.json"))
    parser.add_argument("--out", type=Path, default=Path("model.tar.gz"))
    args = parser.parse_args()
    size = write_tarball(args.manifest, args.out)
    print(f"{args.out}: {size} bytes ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
