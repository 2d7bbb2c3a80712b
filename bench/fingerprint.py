"""What an export depends on, as one hash: the bench exports a variant again when it changes.

`python -m ser_triton.export` reads the packages it imports and those they import in turn (the
floors below export: core, samples, model, serving.steps, evaluation, and the client that
evaluation imports), found here from their import statements rather than listed by hand, so a
package the export starts to use is covered from then on. The hash covers every file of those
packages (code, the recorded speech), the versions of the libraries they import (torch,
transformers, onnxruntime, ...) and the export's command line.
"""

import ast
import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent
"""The source tree: one folder per package of ser_triton (pyproject.toml's package-dir)."""
EXPORT_PACKAGE = "export"


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules of this project without the ser_triton prefix, other top-level modules) that `path`
    imports absolutely, lazy imports inside functions included."""
    own, others = set(), set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "ser_triton":
            names = [f"ser_triton.{alias.name}" for alias in node.names]  # from ser_triton import samples
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            if name.startswith("ser_triton."):
                own.add(name.removeprefix("ser_triton."))
            else:
                others.add(name.split(".")[0])
    return own, others


def _package_of(module: str, root: Path) -> str:
    """The package that holds `module`: its longest prefix that is a folder with an __init__.py."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if (root.joinpath(*parts[:end]) / "__init__.py").is_file():
            return ".".join(parts[:end])
    raise ValueError(f"ser_triton.{module} is in no package folder under {root}")


def read_by(package: str, root: Path = SOURCE_ROOT) -> tuple[set[str], set[str]]:
    """(the packages `package` reads, itself included; the libraries they import), transitively."""
    pending, packages, libraries = [package], set(), set()
    while pending:
        name = pending.pop()
        if name in packages:
            continue
        packages.add(name)
        for path in sorted(root.joinpath(*name.split(".")).glob("*.py")):
            own, others = _imports(path)
            pending += [_package_of(module, root) for module in own]
            libraries |= others
    return packages, libraries - set(sys.stdlib_module_names)


def library_versions(modules: set[str]) -> dict[str, str]:
    """The installed distributions that provide these top-level modules, with their versions."""
    providers = metadata.packages_distributions()
    return {name: metadata.version(name) for module in modules for name in providers.get(module, ())}


def fingerprint(command: list[str], root: Path = SOURCE_ROOT) -> str:
    """16 hex digits of the export's command line, every file of the packages it reads, and the
    versions of the libraries they import."""
    packages, libraries = read_by(EXPORT_PACKAGE, root)
    digest = hashlib.sha256(json.dumps([command, sorted(library_versions(libraries).items())]).encode())
    for package in sorted(packages):
        folder = root.joinpath(*package.split("."))
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".pyc"):
            digest.update(f"{package}/{path.name}\0".encode() + path.read_bytes())
    return digest.hexdigest()[:16]
