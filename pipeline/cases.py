"""Finding the cases of a run in the three input layouts the product accepts.

- template: `<dir>/images/mri/*`, `<dir>/images/body/*`, `<dir>/region.json` (grand-challenge; /input)
- released: `Task1/{AB,HN,TH,brain,pelvis}/<ID>/mr.mha + mask.mha` (region from the folder)
- single:   one MR, one mask, a region and an output file given on the command line

Masks pair with MR files by file name or case id, never by sort order.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.regions import RegionError, canonical_region, read_region_json
from preprocessing.errors import printable
from preprocessing.inspect import ACCEPTED_SUFFIXES

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = ACCEPTED_SUFFIXES  # the formats the guarded reader accepts
MR_NAMES = tuple(f"mr{suffix}" for suffix in IMAGE_SUFFIXES)
MASK_NAMES = tuple(f"mask{suffix}" for suffix in IMAGE_SUFFIXES)
OUTPUT_SUBDIR = Path("images") / "synthetic-ct"
UNCERTAINTY_SUBDIR = Path("images") / "synthetic-ct-uncertainty"


@dataclass
class Case:
    """One MR to turn into an sCT, with everything needed to report on it."""

    case_id: str
    mr: Path
    mask: Path | None
    output: Path
    region: str | None = None  # raw region string (any accepted spelling), or None when it could not be read
    region_error: str | None = None  # why the region is unknown, reported when the case runs
    region_input: dict = field(default_factory=dict)  # the results.json input entry for the region
    uncertainty_output: Path | None = None
    input_error: str | None = None  # a problem found while discovering the case (reported when it runs)
    root: Path | None = None  # the input folder its files must lie in (links out of it are refused); None: single


def case_id_of(path: Path) -> str:
    """File name without its image suffix ('1HNA001.nii.gz' -> '1HNA001')."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _image_files(folder: Path) -> list[Path]:
    """Every visible entry named like an image (any letter case): a folder, a dangling link or a FIFO of that
    name is a case that fails with its own message, never one skipped in silence."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES))


def _output_paths(out_dir: Path, case_id: str, samples: int) -> tuple[Path, Path | None]:
    """The sCT is always `<case id>.mha` (the contract's format, whatever the input's), beside its uncertainty map."""
    name = f"{case_id}.mha"
    output = (out_dir / OUTPUT_SUBDIR / name).absolute()
    uncertainty = (out_dir / UNCERTAINTY_SUBDIR / name).absolute() if samples > 1 else None
    return output, uncertainty


def same_file(a: Path, b: Path | None) -> bool:
    if b is None:
        return False
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_collisions(cases: list[Case]) -> list[Case]:
    """Mark cases whose outputs would collide (one case id twice) or overwrite one of the inputs."""
    by_output: dict[Path, list[Case]] = {}
    for case in cases:
        by_output.setdefault(case.output, []).append(case)
    for output, group in by_output.items():
        if len(group) > 1:
            where = ", ".join(printable(c.mr, 120) for c in group)
            for case in group:
                case.input_error = (
                    f"{printable(case.mr, 400)}: case id {printable(case.case_id)} appears {len(group)} "
                    f"times ({where}); their sCTs would overwrite each other as {output.name}: "
                    "rename one"
                )
    for case in cases:
        for path in (case.output, case.uncertainty_output):
            if path is not None and (same_file(path, case.mr) or same_file(path, case.mask)):
                case.input_error = (
                    f"{printable(path, 400)}: the output would overwrite an input of the case; choose another path"
                )
    return cases


def template_cases(in_dir: Path, out_dir: Path, region_override: str | None = None, samples: int = 1) -> list[Case]:
    """Cases of a grand-challenge template folder (every MR in images/mri, paired with its body mask)."""
    mr_files = _image_files(in_dir / "images" / "mri")
    masks = _image_files(in_dir / "images" / "body")
    region_file = in_dir / "region.json"
    region, region_error = region_override, None
    if region is None:
        if region_file.is_file():
            try:
                region = read_region_json(region_file)
            except RegionError as err:
                region_error = str(err)
        else:
            region_error = f"{region_file}: region file missing (or pass --region)"
    by_name = {p.name: p for p in masks}
    by_id = {case_id_of(p): p for p in masks}
    cases, paired = [], set()
    for mr in mr_files:
        mask = by_name.get(mr.name) or by_id.get(case_id_of(mr))
        if mask is None and len(mr_files) == 1 and len(masks) == 1:
            mask = masks[0]
        if mask is None:
            mask = in_dir / "images" / "body" / mr.name  # reported as missing when the case runs
        paired.add(mask)
        output, uncertainty = _output_paths(out_dir, case_id_of(mr), samples)
        cases.append(
            Case(
                case_id=case_id_of(mr),
                mr=mr.absolute(),
                mask=mask.absolute(),
                output=output,
                region=region,
                region_error=region_error,
                region_input={"type": "String", "filename": str(region_file.absolute())},
                uncertainty_output=uncertainty,
                root=in_dir.absolute(),
            )
        )
    for mask in masks:  # tolerated (an extra mask hurts no case), but said
        if mask not in paired:
            LOG.warning("%s: body mask without an MR of its name or case id; not used", printable(mask, 400))
    return check_collisions(cases)


def _pick(case_dir: Path, names: tuple[str, ...]) -> Path:
    """The first of `names` that is a file in case_dir, else the first that exists at all (a folder, a dangling
    link: the case then fails with what it is), else the first name (reported missing)."""
    candidates = [case_dir / name for name in names]
    return next(
        (p for p in candidates if p.is_file()), next((p for p in candidates if os.path.lexists(p)), candidates[0])
    )


def released_cases(root: Path, out_dir: Path, region_override: str | None = None, samples: int = 1) -> list[Case]:
    """Cases of the released data layout: every folder holding an mr image; the region is its parent folder."""
    cases = []
    for case_dir in sorted({p.parent for name in MR_NAMES for p in root.rglob(name)}, key=lambda d: (d.name, str(d))):
        mr, mask = _pick(case_dir, MR_NAMES), _pick(case_dir, MASK_NAMES)
        region, region_error = region_override, None
        if region is None:
            try:
                region = canonical_region(case_dir.parent.name)
            except RegionError as err:
                region_error = (
                    f"{case_dir}: region folder {case_dir.parent.name!r} is not a region ({err}); pass --region"
                )
        output, uncertainty = _output_paths(out_dir, case_dir.name, samples)
        cases.append(
            Case(
                case_id=case_dir.name,
                mr=mr.absolute(),
                mask=mask.absolute(),
                output=output,
                region=region,
                region_error=region_error,
                region_input={"type": "String", "value": region or case_dir.parent.name},
                uncertainty_output=uncertainty,
                root=root.absolute(),
            )
        )
    return check_collisions(cases)


#: inputs.json socket slugs (and the older interface slugs) that carry each input of the task.
SOCKET_SLUGS = {
    "mr": ("mri", "mr", "mr-image", "mri-image", "t1-mri", "mr-scan", "magnetic-resonance-image"),
    "mask": ("body", "body-mask", "mask", "mri-body-mask", "mr-body-mask"),
    "region": ("region", "anatomical-region", "region-name"),
}
MAX_INPUTS_JSON_BYTES = 1 << 20


class InputsJsonError(ValueError):
    """inputs.json is unreadable, or it and the files beside it disagree."""


def _socket_entries(path: Path) -> dict[str, dict]:
    """role ("mr", "mask", "region") -> its inputs.json entry, matched by socket (or interface) slug."""
    import json

    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_INPUTS_JSON_BYTES + 1)
        if len(data) > MAX_INPUTS_JSON_BYTES:
            raise InputsJsonError(f"{path}: larger than {MAX_INPUTS_JSON_BYTES} bytes")
        entries = json.loads(data)
    except (OSError, ValueError, RecursionError) as err:
        if isinstance(err, InputsJsonError):
            raise
        raise InputsJsonError(f"{path}: cannot read inputs.json ({printable(err, 120)})") from err
    if not isinstance(entries, list):
        raise InputsJsonError(f"{path}: inputs.json must be a list of socket entries")
    found: dict[str, dict] = {}
    for entry in entries:
        socket = entry.get("socket") or entry.get("interface") if isinstance(entry, dict) else None
        slug = socket.get("slug") if isinstance(socket, dict) else None
        if not isinstance(slug, str):
            raise InputsJsonError(f"{path}: an entry has no socket (or interface) slug")
        role = next((r for r, slugs in SOCKET_SLUGS.items() if slug.lower() in slugs), None)
        if role is None:
            LOG.warning("%s: socket %r is not an input of this algorithm; ignored", path, printable(slug, 60))
            continue
        if role in found:
            raise InputsJsonError(f"{path}: two sockets carry the {role} ({printable(slug, 60)})")
        found[role] = {**entry, "_socket": socket}
    missing = [role for role in ("mr", "mask") if role not in found]
    if missing:
        raise InputsJsonError(
            f"{path}: no socket for the {' and the '.join(missing)} (slugs accepted: "
            f"{', '.join(SOCKET_SLUGS[missing[0]])})"
        )
    return found


def _socket_file(in_dir: Path, entry: dict, role: str, source: Path) -> Path:
    """The one image a socket's relative_path holds (a folder with one image, or the image file itself)."""
    relative = entry["_socket"].get("relative_path")
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise InputsJsonError(
            f"{source}: the {role} socket's relative_path {printable(relative, 80)!s} is not a path inside /input"
        )
    target = in_dir / relative
    if target.is_dir():
        images = _image_files(target)
        if len(images) != 1:
            raise InputsJsonError(
                f"{source}: the {role} socket's folder {relative} holds {len(images)} images, not one"
            )
        return images[0]
    if os.path.lexists(target):
        return target
    raise InputsJsonError(f"{source}: the {role} socket's {relative} does not exist under {in_dir}")


def _socket_region(in_dir: Path, entry: dict | None, source: Path) -> str | None:
    """The region from its socket: the value, and the file at relative_path, which must agree when both exist."""
    if entry is None:
        return None
    value = entry.get("value")
    relative = entry["_socket"].get("relative_path")
    from_file = None
    if (
        isinstance(relative, str)
        and relative
        and not Path(relative).is_absolute()
        and ".." not in Path(relative).parts
        and (in_dir / relative).is_file()
    ):
        try:
            from_file = read_region_json(in_dir / relative)
        except RegionError as err:
            raise InputsJsonError(str(err)) from err
    if value is not None:
        try:
            code = canonical_region(value)
        except RegionError as err:
            raise InputsJsonError(f"{source}: region socket: {err}") from err
        if from_file is not None and from_file != code:
            raise InputsJsonError(
                f"{source}: the region socket says {printable(value, 60)!s} but {relative} says {from_file}"
            )
        return code
    if from_file is None:
        raise InputsJsonError(f"{source}: the region socket has no value and no readable file")
    return from_file


def inputs_json_cases(in_dir: Path, out_dir: Path, region_override: str | None = None, samples: int = 1) -> list[Case]:
    """The one case a grand-challenge job describes in /input/inputs.json (the platform's sockets).

    A problem with inputs.json (unreadable, a socket missing, two images where one is expected, a region that
    disagrees with region.json) is one case that fails with that line, so results.json still says what happened.
    """
    source = in_dir / "inputs.json"
    try:
        entries = _socket_entries(source)
        mr = _socket_file(in_dir, entries["mr"], "MR", source)
        mask = _socket_file(in_dir, entries["mask"], "mask", source)
        region = region_override or _socket_region(in_dir, entries.get("region"), source)
        region_error = None if region else f"{source}: no region socket (or pass --region)"
    except InputsJsonError as err:
        output, uncertainty = _output_paths(out_dir, "inputs", samples)
        return [Case("inputs", source.absolute(), None, output, input_error=str(err), uncertainty_output=uncertainty)]
    output, uncertainty = _output_paths(out_dir, case_id_of(mr), samples)
    region_entry = entries.get("region", {})
    region_input = (
        {"type": "String", "value": region}
        if region_entry.get("value") is not None or region_override
        else {
            "type": "String",
            "filename": str(
                (in_dir / str(region_entry.get("_socket", {}).get("relative_path", "region.json"))).absolute()
            ),
        }
    )
    return check_collisions(
        [
            Case(
                case_id_of(mr),
                mr.absolute(),
                mask.absolute(),
                output,
                region=region,
                region_error=region_error,
                region_input=region_input,
                uncertainty_output=uncertainty,
                root=in_dir.absolute(),
            )
        ]
    )


def discover_cases(in_dir: Path, out_dir: Path, region_override: str | None = None, samples: int = 1) -> list[Case]:
    """inputs.json when the folder has one (grand-challenge), else the template layout when `images/mri` exists,
    else the released layout."""
    if (in_dir / "inputs.json").is_file():
        return inputs_json_cases(in_dir, out_dir, region_override, samples)
    if (in_dir / "images" / "mri").is_dir():
        return template_cases(in_dir, out_dir, region_override, samples)
    return released_cases(in_dir, out_dir, region_override, samples)


def single_case(mr: Path, mask: Path, region: str, out: Path, samples: int = 1) -> Case:
    """The one case given with --mr/--mask/--region/--out (a .mha file, never one of the inputs)."""
    out = out.absolute()
    uncertainty = out.with_name(f"{case_id_of(out)}_std.mha") if samples > 1 else None
    return check_collisions(
        [
            Case(
                case_id=case_id_of(mr),
                mr=mr.absolute(),
                mask=mask.absolute(),
                output=out,
                region=region,
                region_input={"type": "String", "value": region},
                uncertainty_output=uncertainty,
            )
        ]
    )[0]
