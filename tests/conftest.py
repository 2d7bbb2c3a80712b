"""Shared fixtures: a tiny-preset export, the real server on free loopback ports, the reference."""

from pathlib import Path

import pytest

from ser_triton.model.reference import ResearchPipeline
from ser_triton.model.sources import build_components

REPO_ROOT = Path(__file__).resolve().parent.parent


def export_tiny(out: Path, **options) -> Path:
    from ser_triton.export.pipeline import ExportOptions, export

    export(ExportOptions(out=out, preset="tiny", **options))
    return out


@pytest.fixture(scope="session")
def tiny_components():
    return build_components("tiny")


@pytest.fixture(scope="session")
def tiny_reference(tiny_components):
    return ResearchPipeline(tiny_components)


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("export") / "model_repository")


def start_server(repository: Path, **kwargs):
    from ser_triton.serving.ports import free_port
    from ser_triton.serving.supervisor import TritonServer

    ports = dict(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    return TritonServer(repository, **{**ports, **kwargs})


@pytest.fixture(scope="session")
def tiny_server(tiny_repository):
    with start_server(tiny_repository) as server:
        yield server


@pytest.fixture(scope="session")
def sentences() -> list:
    """The four recorded sentences at 16 kHz (the files are espeak's 22.05 kHz), cut to their speech:
    the truth of where speech is, for the segmentation and streaming tests."""
    import numpy as np

    from ser_triton import samples
    from ser_triton.core.audio import load_audio

    cut = []
    for path in samples.sentences():
        audio = load_audio(path)
        loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
        cut.append(audio[loud[0]:loud[-1] + 1])
    assert len(cut) == 4
    return cut
