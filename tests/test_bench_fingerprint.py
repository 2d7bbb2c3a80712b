"""The bench's export fingerprint (bench/fingerprint.py) changes with everything the export reads, so a
change to core/specs.py, say, cannot leave the bench measuring a stale export; and it stays the same
for code the export never reads (the positive control: the test can tell the two apart)."""

import shutil

import pytest

from ser_triton.bench import fingerprint
from tests.conftest import REPO_ROOT
from tests.test_imports import FLOORS

COMMAND = ["-m", "ser_triton.export", "--preset", "tiny", "--precision", "fp32"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A copy of the source tree's packages, to change files in."""
    root = tmp_path_factory.mktemp("source")
    for folder in REPO_ROOT.iterdir():
        if (folder / "__init__.py").is_file():
            shutil.copytree(folder, root / folder.name,
                            ignore=shutil.ignore_patterns("__pycache__", "work", "results", "*.egg-info"))
    return root


def changes_the_fingerprint(tree, relative: str) -> bool:
    path = tree / relative
    before, original = fingerprint.fingerprint(COMMAND, tree), path.read_bytes()
    try:
        path.write_bytes(original + b"\n# changed\n")
        return fingerprint.fingerprint(COMMAND, tree) != before
    finally:
        path.write_bytes(original)


def test_the_export_reads_its_floor_found_from_the_imports():
    packages, libraries = fingerprint.read_by(fingerprint.EXPORT_PACKAGE)
    assert {"core", "samples", "model", "serving.steps", "evaluation", "export"} <= packages
    assert packages - {"client"} <= FLOORS["export"]  # the client comes along with evaluation
    assert {"torch", "transformers", "onnx", "onnxruntime", "jiwer"} <= libraries


def test_every_core_file_changes_the_fingerprint(tree):
    core = sorted(path.name for path in (tree / "core").iterdir() if path.suffix == ".py")
    assert {"specs.py", "contract.py", "glossary.py"} <= set(core)
    unnoticed = [name for name in core if not changes_the_fingerprint(tree, f"core/{name}")]
    assert not unnoticed, f"a change to core/{unnoticed[0]} would reuse a stale export"


@pytest.mark.parametrize("relative", ["model/fusion.py", "export/pipeline.py", "serving/steps/text.py",
                                      "evaluation/metrics.py", "samples/speech.wav", "samples/__init__.py"])
def test_what_the_export_reads_from_the_other_floors_changes_it(tree, relative):
    assert changes_the_fingerprint(tree, relative), relative


@pytest.mark.parametrize("relative", ["bench/report.py", "serving/launcher.py", "serving/edge.py"])
def test_code_the_export_never_reads_leaves_it(tree, relative):
    assert not changes_the_fingerprint(tree, relative), relative


def test_the_libraries_and_the_command_line_count(tree, monkeypatch):
    before = fingerprint.fingerprint(COMMAND, tree)
    assert fingerprint.fingerprint(COMMAND + ["--precision", "int8"], tree) != before
    versions = fingerprint.library_versions({"torch"})
    assert versions and all(versions.values())
    monkeypatch.setattr(fingerprint, "library_versions",
                        lambda modules: {name: "0.0-changed" for name in versions} if "torch" in modules else {})
    assert fingerprint.fingerprint(COMMAND, tree) != before
