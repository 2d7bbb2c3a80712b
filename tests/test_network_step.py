"""The step that runs each network on the cpu target (serving/steps/onnx_network.py), run here on an
exported network's real ONNX Runtime session, without Triton (tests/step_harness.py):

- a batch that fails is retried request by request, so a request that fails inside ONNX Runtime
  costs its batch-mates nothing (the ensemble's audio_input refuses every bad request it knows
  before a network sees it, so the served tests never reach this path);
- the memory bound: `--max-batch-seconds` at export -> the audio networks' `max_batch_samples`
  parameter -> the step's cap -> no run holds more padded samples than that, and a request
  longer than the cap runs alone and gives back what it grew.
"""

import json
import shutil
import sys

import numpy as np
import pytest

from ser_triton.core import contract, specs
from ser_triton.export import repository
from ser_triton.core.model_config import read_config
from ser_triton.export.pipeline import REPORT_FILE
from ser_triton.serving.steps import parameters
from tests.step_harness import load_step, steps_without_triton

MAX_BATCH_SECONDS = 1.5
CAP = round(MAX_BATCH_SECONDS * contract.SAMPLE_RATE)
"""The cap, in padded samples, that an export with --max-batch-seconds 1.5 gives the audio networks."""


@pytest.fixture(scope="module")
def capped_repository(tmp_path_factory):
    """The tiny export, by the command line, with --max-batch-seconds 1.5."""
    from ser_triton.export.__main__ import main

    out = tmp_path_factory.mktemp("capped") / "model_repository"
    assert main(["--preset", "tiny", "--out", str(out), "--max-batch-seconds", str(MAX_BATCH_SECONDS)]) == 0
    return out


@pytest.fixture
def steps():
    with steps_without_triton() as package:
        yield package
    assert "triton_python_backend_utils" not in sys.modules  # the stand-in is gone with the test


class RecordingSession:
    """The step's real session, recording each run: its rows, its padded width, whether it gave
    the arena back, and whether it raised. `fail_batches`: runs of more than one row raise (a
    network that fails on a batch and not alone)."""

    def __init__(self, step, fail_batches: bool = False):
        self.step, self.session, self.fail_batches = step, step.session, fail_batches
        self.runs = []

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, output_names, feed, run_options=None):
        if feed is getattr(self.step, "shortest_audio", None):  # the arena emptied before the largest run yet
            return self.session.run(output_names, feed, run_options)
        rows, width = feed[self.step.width_input].shape
        run = {"rows": rows, "width": width, "gave_back": run_options is self.step.give_back, "raised": None}
        self.runs.append(run)
        try:
            if self.fail_batches and rows > 1:
                raise RuntimeError(f"a batch of {rows} failed")
            return self.session.run(output_names, feed, run_options)
        except Exception as error:
            run["raised"] = str(error)
            raise


def audio_request(samples: int, seed: int, rows: int = 1, dtype=np.float32) -> dict:
    rng = np.random.default_rng(seed)
    return {"waveform": (0.1 * rng.standard_normal((rows, samples))).astype(dtype),
            "waveform_length": np.full((rows, 1), samples, np.int64)}


def alone(step, request: dict) -> dict:
    [response] = step.execute([request])
    assert not response.has_error(), response.error().message()
    return response.outputs()


def assert_same_outputs(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


# --- a failed batch: each request retried alone -------------------------------------------------

def test_a_request_that_fails_inside_onnx_runtime_costs_its_batch_mates_nothing(capped_repository, steps):
    step = load_step(steps.onnx_network, capped_repository / specs.ACOUSTIC_ENCODER)
    good = [audio_request(samples, seed) for seed, samples in enumerate([4000, 4200, 4400])]
    bad = audio_request(3900, seed=7, dtype=np.float64)  # the shortest: the batch is stacked in its dtype
    expected = [alone(step, request) for request in good]
    step.session = recorder = RecordingSession(step)
    batch = [good[0], bad, good[1], good[2]]

    responses = step.execute(batch)

    assert len(responses) == len(batch)
    failed = responses[1]
    assert failed.has_error() and failed.error().code() == "INTERNAL"
    assert failed.error().message().startswith(f"{specs.ACOUSTIC_ENCODER}: ")
    assert "double" in failed.error().message() and "float" in failed.error().message()  # ONNX Runtime's own words
    for response, want in zip([responses[0], *responses[2:]], expected):
        assert not response.has_error(), response.error().message()
        assert_same_outputs(response.outputs(), want)
    # how: the four as one run, which ONNX Runtime refused; then each alone, only the bad one refused
    assert [run["rows"] for run in recorder.runs] == [4, 1, 1, 1, 1]
    assert recorder.runs[0]["raised"] and "double" in recorder.runs[0]["raised"]
    assert sum(bool(run["raised"]) for run in recorder.runs[1:]) == 1


def test_a_network_that_fails_on_the_batch_but_not_alone_answers_every_request(capped_repository, steps):
    step = load_step(steps.onnx_network, capped_repository / specs.ACOUSTIC_ENCODER)
    batch = [audio_request(samples, seed) for seed, samples in enumerate([4000, 4300, 4600, 4100])]
    expected = [alone(step, request) for request in batch]
    step.session = recorder = RecordingSession(step, fail_batches=True)

    responses = step.execute(batch)

    for response, want in zip(responses, expected, strict=True):
        assert not response.has_error(), response.error().message()
        assert_same_outputs(response.outputs(), want)
    assert [run["rows"] for run in recorder.runs] == [4, 1, 1, 1, 1]  # the batch was tried, and failed
    assert recorder.runs[0]["raised"] == "a batch of 4 failed" and not any(r["raised"] for r in recorder.runs[1:])


def test_a_lone_request_that_fails_gets_an_error_response_not_an_exception(capped_repository, steps):
    step = load_step(steps.onnx_network, capped_repository / specs.ACOUSTIC_ENCODER)
    [response] = step.execute([audio_request(4000, seed=1, dtype=np.float64)])
    assert response.has_error() and response.error().message().startswith(f"{specs.ACOUSTIC_ENCODER}: ")


# --- the memory bound, hop by hop ---------------------------------------------------------------

def test_max_batch_seconds_becomes_the_audio_networks_max_batch_samples(capped_repository):
    """The export's flag -> the generated configs (the audio networks only) -> the recorded deployment."""
    audio = [name for name in specs.ONNX_NETWORKS
             if parameters.MAX_BATCH_SAMPLES in read_config(
                 capped_repository / name / "config.pbtxt").parameters]
    assert audio == [specs.ACOUSTIC_ENCODER, specs.ASR]  # the networks whose activations grow with the audio
    for name in audio:
        config = read_config(capped_repository / name / "config.pbtxt")
        assert config.parameters[parameters.MAX_BATCH_SAMPLES].string_value == str(CAP) == "24000"
    report = json.loads((capped_repository / REPORT_FILE).read_text())
    assert report["deployment"]["max_batch_seconds"] == MAX_BATCH_SECONDS
    assert repository.Deployment().max_batch_seconds * contract.SAMPLE_RATE != CAP  # not the default's


def test_make_steps_max_batch_seconds_rewrites_the_cap_and_keeps_the_recorded_one_otherwise(
        capped_repository, tmp_path):
    from ser_triton.export.refresh import main as refresh

    copy = tmp_path / "model_repository"
    shutil.copytree(capped_repository, copy)

    def cap(name):
        config = read_config(copy / name / "config.pbtxt")
        return config.parameters[parameters.MAX_BATCH_SAMPLES].string_value

    assert refresh(["--repository", str(copy)]) == 0
    assert cap(specs.ACOUSTIC_ENCODER) == cap(specs.ASR) == str(CAP)
    assert refresh(["--repository", str(copy), "--max-batch-seconds", "3"]) == 0
    assert cap(specs.ACOUSTIC_ENCODER) == cap(specs.ASR) == str(3 * contract.SAMPLE_RATE)
    assert json.loads((copy / REPORT_FILE).read_text())["deployment"]["max_batch_seconds"] == 3


def test_the_step_takes_its_cap_from_the_config(capped_repository, steps):
    for name in (specs.ACOUSTIC_ENCODER, specs.ASR):
        assert load_step(steps.onnx_network, capped_repository / name).max_padded == CAP
    assert load_step(steps.onnx_network, capped_repository / specs.TEXT_ENCODER).max_padded is None


def test_no_run_holds_more_than_the_cap_and_a_longer_request_runs_alone(capped_repository, steps):
    step = load_step(steps.onnx_network, capped_repository / specs.ACOUSTIC_ENCODER)
    # 5000 + 2 x 5200 + 5400 fit in 24000 padded samples; 5600 more would make 5 rows of 5600 = 28000;
    # 30000 samples are more than the cap by themselves
    batch = [audio_request(5000, 0), audio_request(5200, 1, rows=2), audio_request(5400, 2),
             audio_request(5600, 3), audio_request(30000, 4)]
    expected = [alone(step, request) for request in batch]

    def runs(max_padded):
        step.max_padded, step.largest_run = max_padded, 0
        step.session = recorder = RecordingSession(step)
        try:
            responses = step.execute(batch)
        finally:
            step.session = recorder.session
        for response, want in zip(responses, expected, strict=True):
            assert not response.has_error(), response.error().message()
            assert_same_outputs(response.outputs(), want)
        return recorder.runs

    capped = runs(CAP)
    assert sorted((run["rows"], run["width"]) for run in capped) == [(1, 5600), (1, 30000), (4, 5400)]
    for run in capped:
        assert run["rows"] * run["width"] <= CAP or run["rows"] == 1, run  # over the cap: one request alone
    assert [run["gave_back"] for run in capped if run["width"] == 30000] == [True]
    assert not any(run["gave_back"] for run in capped if run["width"] < 30000)
    # the check sees a run over the cap where there is one: the same requests without a cap
    uncapped = runs(None)
    assert any(run["rows"] > 1 and run["rows"] * run["width"] > CAP for run in uncapped), uncapped
