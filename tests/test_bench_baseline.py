"""The bench's PyTorch peers (bench/baseline.py), every variant it can run, on the tiny preset.

bf16 included: autocast runs on any CPU (slowly where there is no AMX or AVX512-BF16), so a variant
that would crash `make bench` on the machines that have bf16 hardware fails here, on any machine.
"""

import numpy as np
import pytest
import torch

from ser_triton.bench.baseline import PYTORCH_VARIANTS, measure, prepare
from ser_triton.bench.workload import load_or_make
from ser_triton.core.audio import load_audio
from ser_triton.core.contract import LABELS
from ser_triton.model.reference import ResearchPipeline
from ser_triton.model.sources import build_components
from ser_triton.samples import speech

FP32_VARIANTS = {"eager-fp32", "compile-fp32"}
"""The variants that compute what the research code computes, in the same precision."""


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    return load_or_make(2, seed=0, root=tmp_path_factory.mktemp("workload"))


@pytest.mark.timeout(900)  # compile-fp32 compiles the four networks on its first calls
@pytest.mark.parametrize("variant", list(PYTORCH_VARIANTS))
def test_every_pytorch_variant_answers_on_the_tiny_preset(variant, workload, tiny_reference):
    audio = load_audio(speech())
    pipeline = ResearchPipeline(build_components("tiny"))  # prepare changes the networks: a pipeline of its own
    context = prepare(pipeline, variant)
    with context():
        result = pipeline.classify(audio, "speech")
        probabilities, transcript = pipeline.predict(audio)
    assert probabilities.dtype == np.float32 and np.isfinite(probabilities).all()
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4) and result.label in LABELS
    assert [result.probabilities[label] for label in LABELS] == pytest.approx(probabilities.tolist(), abs=1e-6)
    expected, expected_transcript = tiny_reference.predict(audio)
    if variant in FP32_VARIANTS:
        np.testing.assert_allclose(probabilities, expected, atol=1e-4)
        assert transcript == expected_transcript
    else:  # reduced precision: the same networks' answer, near (measured here: 7e-4 for bf16 and for int8)
        assert np.abs(probabilities - expected).max() < 0.05

    measured = measure(workload, "tiny", variant, threads=torch.get_num_threads(), progress=False)
    assert measured["variant"] == variant and PYTORCH_VARIANTS[variant] in measured["description"]
    rates = measured["concurrency"]["1"]
    assert rates["requests"] == len(workload.utterances) and rates["audio_seconds_per_s"] > 0
