"""The tensorrt target: profiles cover every request the ensemble accepts; plans build on a GPU."""

import shutil

import pytest

from ser_triton.core.contract import MAX_SECONDS, MIN_SAMPLES, SAMPLE_RATE
from ser_triton.core import specs
from ser_triton.export.repository import Deployment
from ser_triton.export.tensorrt import build_plans, profile_shapes


def test_profiles_span_batch_and_length_limits(tiny_components):
    deployment = Deployment(target="tensorrt", max_batch_size=8)
    all_specs = specs.model_specs(specs.Sizes.of(tiny_components))
    low, _, high = profile_shapes(all_specs[specs.ASR].input("waveform"), deployment)
    assert low == [1, MIN_SAMPLES] and high == [8, int(MAX_SECONDS * SAMPLE_RATE)]
    low, _, high = profile_shapes(all_specs[specs.ACOUSTIC_ENCODER].output("features"), deployment)
    assert low[0] == 1 and low[2] == high[2] == tiny_components.acoustic_encoder.config.hidden_size
    assert high[1] * 320 >= MAX_SECONDS * SAMPLE_RATE - 400
    assert profile_shapes(all_specs[specs.TEXT_ENCODER].input("ids"), deployment)[2] == [8, 512]


def gpu_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (GPU machines / Triton containers only)"
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this machine"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(gpu_reason() is not None, reason=gpu_reason() or "")
def test_plans_build_for_every_network(tiny_repository, tiny_components, tmp_path):
    out = tmp_path / "repo"
    shutil.copytree(tiny_repository, out)
    build_plans(out, specs.model_specs(specs.Sizes.of(tiny_components)), Deployment(target="tensorrt"))
    for name in specs.ONNX_NETWORKS:
        assert (out / name / "1" / "model.plan").stat().st_size > 0
