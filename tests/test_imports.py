"""The house's floors import only downwards, no module imports a command-line script, none reads tests/.

    core (contract, audio, results, specs), samples (the recorded speech)
    <- model (research model), client (thin client), serving.steps (run inside Triton, self-contained)
    <- evaluation (ser-evaluate: the data readers and the metrics, which export's drift gates score with)
    <- export (model -> ONNX + repository), serving (launcher, edge, supervision; needs no evaluation)
    <- train (ser-train: labelled speech -> a research checkpoint; it runs the exported ASR)
    <- bench (make bench)

The ground floor needs only the thin client's own dependencies: the bare client imports all of it.
"""

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

FLOORS = {
    "core": {"core"},
    "samples": {"core", "samples"},
    "model": {"core", "model"},
    "client": {"core", "client"},
    "serving.steps": set(),  # relative imports only: the steps are copied into every model folder
    "evaluation": {"core", "client", "model", "evaluation"},
    "export": {"core", "samples", "model", "serving.steps", "evaluation", "export"},
    "serving": {"core", "samples", "client", "serving.steps", "serving"},
    "train": {"core", "samples", "model", "client", "serving.steps", "evaluation", "export", "train"},
    "bench": {"core", "samples", "model", "client", "serving.steps", "export", "serving", "evaluation", "train",
              "bench"},
}
"""Each package (a folder, installed as ser_triton.<folder>) and the packages it may import."""

SCRIPTS = {"client.infer", "client.evaluate", "evaluation.cli"}
"""Command lines: the top of the house, which nothing imports (client/evaluate.py runs evaluation.cli)."""

SCRIPT_IMPORTS = {"client.evaluate": {"evaluation.cli"}}


def package_of(module: str) -> str:
    return "serving.steps" if module.startswith("serving.steps") else module.split(".")[0]


def modules() -> dict[str, Path]:
    found = {}
    for package in {package_of(p) for p in FLOORS}:
        folder = REPO_ROOT / package.replace(".", "/")
        for path in folder.rglob("*.py"):
            if not all((parent / "__init__.py").is_file() for parent in path.parents if parent != REPO_ROOT
                       and REPO_ROOT in parent.parents):
                continue  # not a module of the package: a script's data, bench/work's exported repositories
            relative = path.relative_to(REPO_ROOT).with_suffix("")
            found[".".join(relative.parts).removesuffix(".__init__")] = path
    return found


def top_level_imports(path: Path) -> set[str]:
    """Every top-level module `path` imports (absolute imports, lazy ones inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def thin_client_modules() -> set[str]:
    """Top-level modules a bare `pip install .` can import: the standard library, the project's
    dependencies (pyproject.toml, no extras) and theirs."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pending, installed = [Requirement(text) for text in project["dependencies"]], set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if (name, frozenset(extras)) in installed:
            continue
        installed.add((name, frozenset(extras)))
        for text in metadata.distribution(name).requires or []:
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in extras | {""}):
                pending.append(needed)
    names = {name for name, _ in installed}
    return set(sys.stdlib_module_names) | {module for module, distributions in metadata.packages_distributions().items()
                                           if names & {canonicalize_name(d) for d in distributions}}


def imports(path: Path) -> set[str]:
    """Modules of this project that `path` imports (absolute imports under ser_triton)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]  # from ser_triton import x
        for name in names:
            if name.startswith("ser_triton."):
                found.add(name.removeprefix("ser_triton."))
    return found


MODULES = modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_its_own_floor_and_below(module):
    package = package_of(module)
    allowed = FLOORS[package]
    for imported in imports(MODULES[module]):
        if any(imported == s or imported.startswith(s + ".") for s in SCRIPT_IMPORTS.get(module, ())):
            continue  # the script client/evaluate.py runs its command line
        target = package_of(imported)
        assert target in allowed, f"{module} ({package}) imports {imported} ({target}): allowed {sorted(allowed)}"
        script = next((s for s in SCRIPTS if imported == s or imported.startswith(s + ".")), None)
        assert script is None, f"{module} imports the command-line script {script}: move what it needs into a " \
                               "library module"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_reads_the_tests_folder(module):
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert not (node.value == "tests" or node.value.startswith("tests/")), \
                f"{module} refers to {node.value!r}: data that code needs ships with it (samples/)"


def test_the_steps_are_self_contained():
    """The Python steps run inside Triton's stub from a copy in each model folder: relative imports only."""
    for module, path in MODULES.items():
        if package_of(module) == "serving.steps":
            assert not imports(path), f"{module} imports {imports(path)}"


def test_the_checker_sees_a_violation(tmp_path):
    """Positive control: an upward import and a script import are found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ser_triton.export.pipeline import export\nimport ser_triton.client.infer\n"
                   "from ser_triton import bench\n")
    found = imports(bad)
    assert {"export.pipeline", "client.infer", "bench"} <= found
    assert package_of("export.pipeline") not in FLOORS["model"]
    assert any(s == "client.infer" for s in SCRIPTS)


def test_the_ground_floor_needs_nothing_the_thin_client_lacks():
    """core is below the thin client, which installs no extra: every module core imports comes with
    `pip install .` (a scorer needing jiwer, say, belongs in evaluation)."""
    available = thin_client_modules() | {"ser_triton"}
    assert {"numpy", "tritonclient", "soundfile", "json"} <= available and "jiwer" not in available
    assert "torch" not in available  # positive control: an extra's module is not counted as installed
    for module, path in MODULES.items():
        if package_of(module) == "core":
            missing = top_level_imports(path) - available
            assert not missing, f"{module} imports {sorted(missing)}, which the bare client does not install: " \
                                "move it up to the floor that uses it"
