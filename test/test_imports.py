"""Imports run one way, with no cycle anywhere in the repository (imports inside functions count too).

Layers, lowest first: modelspec <- preprocessing / postprocessing <- engine <- pipeline <- process (the container
path, the product); the tools (phantoms <- evaluation <- training) may import the product; research and
measurements (benchmarks, experiments, scripts) and the tests may import everything above; nothing imports tests.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTAINER_PACKAGES = ("pipeline", "engine", "preprocessing", "postprocessing", "modelspec")
PRODUCT = CONTAINER_PACKAGES + ("process",)
TOOLS = ("phantoms", "evaluation", "training")
#: Folders of scripts run by path; they import their siblings by bare name (sys.path), e.g. `import compare_models`.
SCRIPT_FOLDERS = ("benchmarks", "experiments", "scripts", "test")
FOLDERS = CONTAINER_PACKAGES + TOOLS + SCRIPT_FOLDERS


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _files(folders: tuple[str, ...]) -> list[Path]:
    files = [REPO / "process.py"] if "process" in folders or "pipeline" in folders else []
    return files + [p for folder in folders for p in sorted((REPO / folder).rglob("*.py"))]


@lru_cache(maxsize=None)
def _imported_names(path: Path) -> frozenset[str]:
    """Every module name a file imports, at the top or inside functions; `from a import b` gives a and a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(found)


@lru_cache(maxsize=None)
def _graph(folders: tuple[str, ...] = FOLDERS) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports (a package's __init__ when it names the package)."""
    files = _files(folders)
    modules = {_module_name(p): p for p in _files(FOLDERS)}
    by_bare_name = {name.rsplit(".", 1)[-1]: name for name in modules if name.split(".")[0] in SCRIPT_FOLDERS}
    graph = {}
    for path in files:
        targets = set()
        for name in _imported_names(path):
            if name in modules:
                targets.add(name)
            elif name.split(".")[0] in by_bare_name and name.split(".")[0] not in modules:
                targets.add(by_bare_name[name.split(".")[0]])  # a sibling script imported by its bare name
            elif "." in name and name.rsplit(".", 1)[0] in modules:
                targets.add(name.rsplit(".", 1)[0])  # `from module import function`
        graph[_module_name(path)] = targets - {_module_name(path)}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as a path, or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                loop = path + [node]
                return loop[loop.index(target) :] + [target]
            if target not in state and target in graph:
                found = visit(target, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [])):
            return found
    return None


def _layer(module: str) -> str:
    return module.split(".")[0]


def test_container_modules_import_nothing_from_training_or_tools():
    for module, targets in _graph(PRODUCT).items():
        outside = {t for t in targets if _layer(t) not in PRODUCT}
        assert not outside, f"{module} imports {outside}: the container ships only the product"


def test_lower_stages_never_import_the_engine_or_the_pipeline():
    for module, targets in _graph(PRODUCT).items():
        top = module.split(".")[0]
        if top in ("preprocessing", "postprocessing", "modelspec"):
            upward = {t for t in targets if t.split(".")[0] in ("engine", "pipeline", "process")}
            assert not upward, f"{module} imports {upward}"
        if top == "modelspec":
            assert not targets, f"modelspec must import no first-party module, imports {targets}"


def test_tools_import_the_product_and_lower_tools_only():
    """phantoms imports no other tool, evaluation no trainer; no tool imports research, scripts or tests."""
    for module, targets in _graph(TOOLS).items():
        allowed = PRODUCT + TOOLS[: TOOLS.index(_layer(module)) + 1]
        outside = {t for t in targets if _layer(t) not in allowed}
        assert not outside, f"{module} imports {outside}; a tool may import {allowed}"


def test_nothing_outside_the_tests_imports_a_test_module():
    for module, targets in _graph().items():
        if _layer(module) != "test":
            assert not {t for t in targets if _layer(t) == "test"}, f"{module} imports a test module"


def test_no_import_cycle_anywhere():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_sees_imports_inside_functions(tmp_path):
    """The cycle export -> train -> initial_weights -> export hid behind an import inside a function."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    code = tmp_path / "lazy.py"
    code.write_text("def f():\n    from training.export import export\n")
    assert _imported_names(code) == {"training.export", "training.export.export"}


def test_every_container_package_reaches_the_image():
    """The image is built from a whitelist (.dockerignore) and explicit COPY lines: a new package needs both."""
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    allowed = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for package in CONTAINER_PACKAGES:
        assert f"!{package}/" in allowed, f".dockerignore keeps {package}/ out of the build context"
        assert f" {package}/ {package}/" in dockerfile, f"the Dockerfile does not COPY {package}/"


# --- the research wing (experiments/) and the benchmarks -------------------------------------------------------------
# Layers: the product (CONTAINER_PACKAGES, process) and the tools (training, evaluation, phantoms) never reach into
# experiments/, nor do the performance benchmarks; experiments may use all of them. Scripts in benchmarks/ and
# experiments/ put their own folder on sys.path, so a bare `import compare_models` names a sibling script.
TOOL_PACKAGES = ("training", "evaluation", "phantoms")
WING = "experiments"
WING_SCRIPT_FOLDERS = ("benchmarks", WING, "scripts")
FIRST_PARTY = PRODUCT + TOOLS


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def _reaches_into_the_wing(path: Path) -> list[str]:
    """Imports of the wing in a file, and the string "experiments" (a sys.path entry such as REPO / "experiments")."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == WING]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == WING:
            found.append(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip("/") == WING:
            found.append(f"the path segment {node.value!r}")
    return found


def test_product_tools_and_benchmarks_never_import_the_research_wing():
    files = [REPO / "process.py", *_python_files(*CONTAINER_PACKAGES, *TOOL_PACKAGES, "benchmarks", "scripts")]
    offenders = {str(p.relative_to(REPO)): found for p in files if (found := _reaches_into_the_wing(p))}
    assert not offenders, f"only experiments/ and the tests may use experiments/: {offenders}"


def _module_file(module: str, importer: Path) -> Path | None:
    """The file a first-party module name resolves to: a repository module, or a sibling script of the importer."""
    parts = module.split(".")
    for base in (REPO, importer.parent, *(REPO / folder for folder in WING_SCRIPT_FOLDERS)):
        for candidate in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name))
            if "_EXPORTS" in names and isinstance(node.value, ast.Dict):  # lazy exports (a module __getattr__)
                names.update(k.value for k in node.value.keys if isinstance(k, ast.Constant))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def test_every_first_party_import_of_the_wing_and_the_benchmarks_resolves():
    """A moved or renamed module breaks a script only when it runs; this finds it now: every import of a repository
    module (or of a sibling script) in experiments/ and benchmarks/ names a file that exists and defines the name."""
    known = set(FIRST_PARTY) | {WING}
    siblings = {p.stem for folder in WING_SCRIPT_FOLDERS for p in (REPO / folder).glob("*.py")}
    broken = []
    for path in _python_files(WING, "benchmarks"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules, names = [node.module], [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                modules, names = [alias.name for alias in node.names], []
            else:
                continue
            for module in modules:
                if module.split(".")[0] not in known | siblings:
                    continue
                target = _module_file(module, path)
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                if target is None:
                    broken.append(f"{where} imports {module}, which does not exist")
                    continue
                for name in names:
                    submodule = _module_file(f"{module}.{name}", path) if target.name == "__init__.py" else None
                    if name != "*" and name not in _top_level_names(target) and submodule is None:
                        broken.append(f"{where}: {module} defines no {name}")
    assert not broken, "\n".join(broken)


def test_every_repository_path_a_script_names_exists():
    """The experiment and tool scripts call each other by path (bash experiments/smooth_mr_experiment.sh, python
    experiments/real_mr_check.py ...): every such path must exist after a move."""
    pattern = re.compile(
        r"\b((?:benchmarks|experiments|scripts|configs|test|evaluation|phantoms|training)/[\w./-]+\.(?:py|sh|toml))\b"
    )
    missing = []
    for folder in WING_SCRIPT_FOLDERS:
        for path in sorted((REPO / folder).iterdir()):
            if path.suffix not in (".sh", ".py"):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                missing += [
                    f"{path.relative_to(REPO)}:{number}: {name}"
                    for name in pattern.findall(line)
                    if not (REPO / name).is_file()
                ]
    assert not missing, "\n".join(missing)


def test_the_image_copies_only_the_product():
    """The build context is a whitelist: only the product's packages and files, never the wing, the tools or tests."""
    product = {f"!{package}/" for package in CONTAINER_PACKAGES} | {
        "!Dockerfile",
        "!requirements.txt",
        "!process.py",
        "!model_weights/",
        "!work/docker-build/ca-certificates.crt",
    }
    allowed = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("!")
    }
    assert allowed <= product, f".dockerignore lets more than the product into the image: {sorted(allowed - product)}"
    copied = re.findall(r"^COPY (?:--\S+ )*(\S+)", (REPO / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    for source in copied:
        assert source.split("/")[0] not in (WING, "benchmarks", "scripts", "test", *TOOL_PACKAGES), source
