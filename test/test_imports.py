"""The container path's imports run one way: process -> pipeline -> engine / stages -> modelspec, with no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTAINER_PACKAGES = ("pipeline", "engine", "preprocessing", "postprocessing", "modelspec")
FIRST_PARTY = CONTAINER_PACKAGES + ("process", "training", "evaluation", "phantoms")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """First-party modules a file imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in FIRST_PARTY)
    return found


def _graph() -> dict[str, set[str]]:
    files = [REPO / "process.py"] + [
        p for package in CONTAINER_PACKAGES for p in sorted((REPO / package).rglob("*.py"))
    ]
    graph = {_module_name(p): _imports(p) for p in files}
    # "from engine import x" and "import engine.manifest" both name modules; map to the nearest known module
    known = set(graph)
    return {name: {t if t in known else t.rsplit(".", 1)[0] for t in targets} for name, targets in graph.items()}


def test_container_modules_import_nothing_from_training_or_tools():
    for module, targets in _graph().items():
        outside = {t for t in targets if t.split(".")[0] in ("training", "evaluation", "phantoms")}
        assert not outside, f"{module} imports {outside}: the container does not ship those packages"


def test_lower_stages_never_import_the_engine_or_the_pipeline():
    for module, targets in _graph().items():
        top = module.split(".")[0]
        if top in ("preprocessing", "postprocessing", "modelspec"):
            upward = {t for t in targets if t.split(".")[0] in ("engine", "pipeline", "process")}
            assert not upward, f"{module} imports {upward}"
        if top == "modelspec":
            assert not targets, f"modelspec must import no first-party module, imports {targets}"


def test_no_import_cycle_on_the_container_path():
    graph = _graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            assert state.get(target) != 1, "import cycle: " + " -> ".join(path + [node, target])
            if target not in state:
                visit(target, path + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_every_container_package_reaches_the_image():
    """The image is built from a whitelist (.dockerignore) and explicit COPY lines: a new package needs both."""
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    allowed = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for package in CONTAINER_PACKAGES:
        assert f"!{package}/" in allowed, f".dockerignore keeps {package}/ out of the build context"
        assert f" {package}/ {package}/" in dockerfile, f"the Dockerfile does not COPY {package}/"
