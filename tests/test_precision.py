"""Reduced precision: drift limits that decide, `--precision auto` choosing per network with its
evidence recorded, a variant past the limits exported but reported loudly, and what is served
being what was measured."""

import json
import logging

import numpy as np
import pytest

from ser_triton.export import precision, repository
from ser_triton.core.model_config import read_config

from ser_triton.core import specs
from ser_triton.export.pipeline import REPORT_FILE, ExportOptions, export, verified
from ser_triton.export.precision import DriftLimits
from tests.conftest import start_server
from tests.server_helpers import connect, infer, utterance

EXACT = DriftLimits(min_hidden_cosine=1 - 1e-9, min_decisive_label_agreement=1.0, max_probability_diff=1e-9,
                    min_decisive_frame_agreement=1.0)
"""Limits no reduced precision meets: only fp32 itself."""


def test_limits_name_what_they_break():
    limits = DriftLimits()
    assert limits.violations({"min_hidden_cosine": 0.999, "decisive_label_agreement": 1.0,
                              "max_probability_diff": 0.01, "decisive_frame_agreement": 0.995,
                              "label_agreement": 0.2, "transcript_cer": 0.6}) == []  # reported, not gated
    broken = limits.violations({"min_hidden_cosine": 0.9, "decisive_label_agreement": 0.5,
                                "max_probability_diff": 0.2, "decisive_frame_agreement": 0.9})
    assert [b.split()[0] for b in broken] == ["min_hidden_cosine", "decisive_label_agreement",
                                              "max_probability_diff", "decisive_frame_agreement"]
    assert limits.violations({"decisive_label_agreement": None, "decisive_frame_agreement": None}) == []


def test_decisions_are_judged_where_fp32_made_one():
    from ser_triton.evaluation.metrics import decisive_label_agreement

    def record(*p):
        return {"probabilities": dict(zip(("happy", "sad", "angry", "neutral"), p))}

    fp32 = [record(0.7, 0.1, 0.1, 0.1), record(0.26, 0.25, 0.25, 0.24), record(0.1, 0.6, 0.2, 0.1)]
    variant = [record(0.7, 0.1, 0.1, 0.1), record(0.25, 0.26, 0.25, 0.24), record(0.1, 0.2, 0.6, 0.1)]
    assert decisive_label_agreement(fp32, variant, 0.1) == (0.5, 2)  # the near-tie in the middle is left out
    assert decisive_label_agreement(fp32[1:2], variant[1:2], 0.1) == (None, 0)


def test_decisive_ctc_frames(all_specs):
    from ser_triton.export.drift import FRAME_MARGIN, decisive_frame_agreement

    asr = all_specs[specs.ASR]
    logits = np.zeros((1, 4, 3), np.float32)
    logits[0, :, 0] = [FRAME_MARGIN + 1, 0.1, FRAME_MARGIN + 1, FRAME_MARGIN + 1]  # frame 1 is a near-tie
    changed = logits.copy()
    changed[0, 1] = [0, 1, 0]
    changed[0, 3] = [0, FRAME_MARGIN + 2, 0]
    values = lambda l: {asr.output("logits").name: l, asr.output("length").name: np.array([4])}  # noqa: E731
    assert decisive_frame_agreement([values(logits)], [values(changed)], asr) == (2 / 3, 3)


@pytest.fixture(scope="module")
def all_specs(tiny_components):
    return specs.model_specs(specs.Sizes.of(tiny_components))


def test_auto_serves_the_fastest_within_the_limits(tmp_path, monkeypatch, all_specs):
    """choose_variant judges from the fastest down and serves the first within the limits: the
    slower ones are not judged (and say so), and the files of those not served are removed.
    Building, timing and judging are faked: the times and verdicts are the test's."""
    seconds = {"fp32": 3.0, "int8": 1.0, "int8-static": 2.0, "bf16": 2.5}
    within = {"fp32": True, "int8": False, "int8-static": True, "bf16": True}

    def quantized(source, destination, *args):
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(b"int8")

    monkeypatch.setattr(precision, "candidates", lambda network, isa: [precision.FP32, precision.int8("dynamic"),
                                                                       precision.int8("static"), precision.BF16])
    monkeypatch.setattr(precision, "quantize_dynamic_int8", quantized)
    monkeypatch.setattr(precision, "quantize_static_int8", quantized)
    monkeypatch.setattr(precision, "measure", lambda variant, path, *args, timed: precision.Candidate(
        variant, path, path.stat().st_size, 0.0, seconds[variant.name] if timed else None))
    monkeypatch.setattr(precision, "judge", lambda variant, *args: precision.Judgement.of(
        {"min_hidden_cosine": 1.0 if within[variant.name] else 0.5}))
    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes(b"fp32")

    def choose():
        return precision.choose_variant("auto", specs.ACOUSTIC_ENCODER, fp32, all_specs[specs.ACOUSTIC_ENCODER],
                                        precision.Evidence([], [], []), {}, tmp_path, all_specs, tmp_path / "scratch",
                                        ["avx512_vnni"], 1, logging.getLogger("test"))

    choice = choose()
    assert choice.chosen == "int8-static" and choice.served.within_limits
    assert choice.candidates["int8"].judgement.violations and not choice.candidates["int8"].within_limits
    for slower in ("bf16", "fp32"):
        assert choice.candidates[slower].judgement is None
        assert choice.candidates[slower].not_judged == "no: int8-static is faster and within the limits"
    assert choice.served.path.is_file() and not choice.candidates["int8"].path.exists() and fp32.is_file()
    assert choice.entry()["candidates"]["bf16"]["judged"].startswith("no:")
    within["int8-static"] = False
    assert choose().chosen == "bf16"


@pytest.fixture(scope="module")
def auto_repository(tmp_path_factory, tiny_components):
    out = tmp_path_factory.mktemp("auto") / "repository"
    export(ExportOptions(out=out, preset="tiny", precision="auto"), tiny_components)
    return out


def test_auto_picks_and_records_a_choice_per_network(auto_repository):
    report = json.loads((auto_repository / REPORT_FILE).read_text())
    choice = report["precision_choice"]
    assert choice["requested"] == "auto" and choice["utterances"] >= 10
    assert set(choice["networks"]) == set(specs.ONNX_NETWORKS)
    for name, entry in choice["networks"].items():
        candidates = entry["candidates"]
        assert {"fp32", "int8", "int8-static"} <= set(candidates)
        fastest_within = min((v for v, c in candidates.items() if c.get("within_limits")),
                             key=lambda v: candidates[v]["seconds"])
        assert entry["chosen"] == fastest_within and entry["within_limits"]
        chosen_seconds = candidates[entry["chosen"]]["seconds"]
        for variant, candidate in candidates.items():
            assert candidate["seconds"] > 0
            if candidate["seconds"] < chosen_seconds:  # every faster one was judged, and broke a limit
                assert candidate["violations"] and not candidate["within_limits"], (name, variant)
            if "drift" in candidate:
                assert set(candidate["drift"]) >= {"min_hidden_cosine", "label_agreement", "transcript_cer",
                                                   "max_probability_diff", "decisive_label_agreement",
                                                   "decisive_frame_agreement"}
                assert candidate["within_limits"] == (not candidate["violations"])
            else:  # slower than a variant within the limits: not judged, and says so
                assert candidate["seconds"] >= chosen_seconds and candidate["judged"].startswith("no:")
    assert choice["within_limits"] and not choice["chain_violations"]
    assert any(line.startswith("verified: every network and the whole chain are within the drift limits")
               for line in verified(report))


def test_static_int8_answers_do_not_depend_on_the_batch(auto_repository):
    """Dynamic int8 takes activation scales from the whole batch; calibrated (static) int8 does not."""
    choice = json.loads((auto_repository / REPORT_FILE).read_text())["precision_choice"]
    for name in (specs.ACOUSTIC_ENCODER, specs.TEXT_ENCODER):
        candidates = choice["networks"][name]["candidates"]
        assert candidates["int8-static"]["max_abs_diff_batched_vs_alone"] < 1e-4
        assert candidates["int8"]["max_abs_diff_batched_vs_alone"] > candidates["int8-static"][
            "max_abs_diff_batched_vs_alone"]


def test_a_precision_past_the_limits_is_exported_and_reported_loudly(tmp_path, monkeypatch, tiny_components):
    monkeypatch.setattr(precision, "DRIFT_LIMITS", EXACT)
    report = export(ExportOptions(out=tmp_path / "int8", preset="tiny", precision="int8"), tiny_components)
    choice = report["precision_choice"]
    assert not choice["within_limits"]
    assert all(entry["chosen"] == "int8" and entry["candidates"]["int8"]["violations"]
               for entry in choice["networks"].values())
    warning = [line for line in verified(report) if line.startswith("WARNING: OUTSIDE THE DRIFT LIMITS")]
    assert warning and "min_hidden_cosine" in warning[0]
    assert repository.network_file(tmp_path / "int8", specs.ASR).is_file()


def test_auto_under_limits_only_fp32_meets_keeps_fp32(tmp_path, monkeypatch, tiny_components):
    monkeypatch.setattr(precision, "DRIFT_LIMITS", EXACT)
    report = export(ExportOptions(out=tmp_path / "auto", preset="tiny", precision="auto"), tiny_components)
    assert {entry["chosen"] for entry in report["precision_choice"]["networks"].values()} == {"fp32"}


@pytest.mark.server
@pytest.mark.parametrize("requested", ["auto", "bf16"])
def test_what_is_served_is_what_the_export_measured(tmp_path, tiny_components, auto_repository, requested):
    """The served answers equal the export's own chain with the chosen variants (same sessions,
    same runtime, OpenVINO included), for utterances alone."""
    from ser_triton.export.calibration import recorded_speech
    from ser_triton.export.drift import records, run_chain
    from ser_triton.export.precision import FIXED, session_factory
    from ser_triton.export.repository import model_directory, network_file

    out = auto_repository if requested == "auto" else tmp_path / "bf16"
    if requested == "bf16":
        export(ExportOptions(out=out, preset="tiny", precision="bf16"), tiny_components)
    choice = json.loads((out / REPORT_FILE).read_text())["precision_choice"]
    config = read_config(out / specs.ASR / "config.pbtxt")
    assert config.parameters["runtime"].string_value == choice["networks"][specs.ASR]["runtime"]
    all_specs = specs.model_specs(specs.Sizes.of(tiny_components))
    variants = {name: next(v for v in precision.candidates(name, ["amx"]) + list(FIXED.values())
                           if v.name == entry["chosen"]) for name, entry in choice["networks"].items()}
    audios = [recorded_speech()[1], utterance(2.2, 5)]
    expected = records(run_chain({name: session_factory(network_file(out, name), variant, 1)
                                  for name, variant in variants.items()},
                                 model_directory(out, specs.CTC_TOKENIZE), all_specs, audios), all_specs)
    with start_server(out) as server:
        client = connect(server, "grpc")
        for audio, want in zip(audios, expected):
            emotions, probabilities, transcripts = infer(client, "grpc", audio[None])
            np.testing.assert_allclose(probabilities[0], list(want["probabilities"].values()), atol=1e-4)
            assert transcripts == [want["transcript"]]


def test_calibration_ranges_are_those_of_onnxruntimes_calibrator(tmp_path, tiny_repository):
    """export.quantize.calibrate augments the graph without its weights; the ranges must be the
    ones ORT's own MinMax calibrator (which loads and copies the whole network) finds."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator
    from onnxruntime.quantization.calibrate import load_tensors_data

    from ser_triton.export.quantize import calibrate

    path = repository.network_file(tiny_repository, specs.ACOUSTIC_ENCODER)
    rng = np.random.default_rng(0)
    feeds = [{"waveform": rng.standard_normal((1, n)).astype(np.float32), "waveform_length": np.array([n])}
             for n in (4000, 9000, 16000)]
    calibrate(path, feeds, tmp_path / "ours.json")
    ours = load_tensors_data(tmp_path / "ours.json")

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    theirs = create_calibrator(path, ["MatMul"], str(tmp_path / "augmented.onnx"),
                               calibrate_method=CalibrationMethod.MinMax)
    theirs.collect_data(Feeds())
    expected = theirs.compute_data()
    assert set(ours.data) == set(expected.data) and len(ours.data) > 10
    for tensor, data in expected.data.items():
        np.testing.assert_allclose(ours.data[tensor].range_value, data.range_value, rtol=1e-5, atol=1e-6)
    assert not list(path.parent.glob("calibration-*")), "the augmented graph is removed"
