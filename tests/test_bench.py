"""`make bench` end to end in quick mode on the tiny preset: files and keys, never timings."""

import json
import math
from pathlib import Path

import pytest

from ser_triton.bench.__main__ import main as bench_main
from ser_triton.bench.workload import load_or_make, target_lengths
from ser_triton.export.network_files import size
from ser_triton.export.repository import network_file
from ser_triton.core.specs import ONNX_NETWORKS

pytestmark = pytest.mark.server

UTTERANCES = 4


def test_workload_lengths_follow_the_spread():
    lengths = target_lengths(200, seed=3)
    assert min(lengths) >= 1.0 and max(lengths) <= 15.0
    assert 4.0 < sum(lengths) / len(lengths) < 5.0
    assert target_lengths(200, seed=3) == lengths  # seeded


def test_workload_is_made_once_and_reused(tmp_path):
    first = load_or_make(3, seed=1, root=tmp_path)
    stamp = first.perf_input.stat().st_mtime_ns
    again = load_or_make(3, seed=1, root=tmp_path)
    assert again.perf_input.stat().st_mtime_ns == stamp
    data = json.loads(first.perf_input.read_text())["data"]
    assert len(data) == 3 and all(entry["AUDIO"]["shape"][0] > 16000 * 0.9 for entry in data)
    assert [u.seconds for u in again.utterances] == [u.seconds for u in first.utterances]


def test_workload_without_espeak_uses_the_recorded_sentences(tmp_path, monkeypatch):
    import ser_triton.bench.workload as workload

    monkeypatch.setattr(workload, "source", lambda: "recorded (test)")
    monkeypatch.setattr(workload.shutil, "which", lambda name, *args, **kwargs: None)
    made = load_or_make(3, seed=2, root=tmp_path)
    assert made.describe()["source"] == "recorded (test)"
    assert all(u.samples().size == round(u.seconds * 16000) for u in made.utterances)
    assert all(u.text.startswith(("sentence", "speech")) for u in made.utterances)


def test_streaming_delays_count_from_the_end_of_speech_that_the_workload_knows(tmp_path):
    """Not from the end the server reports, which carries the segmenter's padding: the conversation
    knows which of its samples are speech (its utterances' samples above 1% of their peak)."""
    import numpy as np

    from ser_triton.bench import streaming
    from ser_triton.core.contract import SAMPLE_RATE

    made = load_or_make(3, seed=1, root=tmp_path)
    audio, share, spoken = streaming.conversation(made, seed=0, seconds=10)
    assert audio.size == spoken.size and 0 < spoken.mean() <= share < 1
    first = made.utterances[np.random.default_rng(0).permutation(3)[0]].samples()  # after half a second
    start, end = SAMPLE_RATE // 2, SAMPLE_RATE // 2 + first.size
    last_loud = np.flatnonzero(np.abs(first) > 0.01 * np.abs(first).max())[-1]
    assert not spoken[:start].any() and not spoken[end:end + SAMPLE_RATE].any()  # the pauses are silence
    assert streaming.speech_end(spoken, start - 100, end + 2400) == start + last_loud + 1  # padded either side
    reported = [(start - 100, end + 2400, 9.0), (end + 100, end + 900, 9.5)]  # the second one holds no speech
    assert streaming.delays(reported, spoken) == ([9.0 - (start + last_loud + 1) / SAMPLE_RATE],
                                                  [9.0 - (end + 2400) / SAMPLE_RATE])


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_bench_on_the_tiny_preset(tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    code = bench_main(["--quick", "--preset", "tiny", "--utterances", str(UTTERANCES), "--concurrency", "1,2",
                       "--client-concurrency", "2", "--variants", "fp32,auto", "--pytorch-variants",
                       "eager-fp32,eager-int8", "--stream-seconds", "8", "--most-streams", "2",
                       "--out", str(out), "--work", str(work), "--no-progress"])
    assert code == 0
    for name in ("summary.json", "summary.md", "throughput_latency.png", "streaming.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())

    variants = {"fp32", "auto"}
    assert set(summary["speedup_vs_pytorch"]) == variants == set(summary["speedup_vs_best_pytorch"])
    assert all(positive(v) for v in summary["speedup_vs_pytorch"].values())
    assert set(summary["pytorch_variants"]) == {"eager-fp32", "eager-int8"}
    assert all(positive(v) for v in summary["pytorch_variants"].values())
    best_pytorch = max(summary["pytorch_variants"].values())
    for name, ratio in summary["speedup_vs_best_pytorch"].items():  # the same run, against the best peer
        assert ratio == pytest.approx(summary["speedup_vs_pytorch"][name] * summary["pytorch_variants"]["eager-fp32"]
                                      / best_pytorch, rel=0.02)
    assert set(summary["efficiency"]) == variants and all(positive(v) for v in summary["efficiency"].values())
    assert "fp32" in summary["gemm_gflops_2_threads"]
    assert set(summary["drift"]) == {"auto"} and set(summary["within_drift_limits"]) == variants
    for measured in summary["drift"].values():
        assert 0 <= measured["label_agreement"] <= 1 and 0 <= measured["max_probability_diff"] < 1
        assert measured["transcript_cer"] >= 0 and 0 < measured["min_hidden_cosine"] <= 1
    assert summary["best_within_drift_limits"] in variants
    assert set(summary["systems"]["auto"]["precision"]["chosen"]) == {"acoustic_encoder", "asr", "text_encoder",
                                                                     "fusion_head"}
    assert all(positive(v) for v in summary["p50_latency_c1_vs_pytorch"].values())
    machine = summary["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and "onnxruntime" in machine["versions"]
    assert summary["workload"]["utterances"] == UTTERANCES
    [live] = summary["streaming"].values()  # quick: the first variant's streaming capacity (contract keys)
    assert list(summary["streaming"]) == ["fp32"]
    assert [level["streams"] for level in live["levels"]][:1] == [1] and 0 < live["speech_share"] < 1
    assert {"p50", "p90", "p99"} <= set(live["single_stream"]) and positive(live["single_stream"]["p90"])
    assert live["max_streams"] == max([lv["streams"] for lv in live["levels"] if lv["sustained"]], default=0)
    assert live["efficiency"] == pytest.approx(live["max_streams"] / live["throughput_streams"], abs=0.001)
    assert all(level["utterances"] > 0 and level["kept_up"] in (True, False) for level in live["levels"])
    assert all({"p50", "p90", "p99"} <= set(level["from_padded_end"]) for level in live["levels"])
    assert live["compute_floor_s"]["utterances"] > 0 and positive(live["compute_floor_s"]["p50"])
    assert "Live streams" in (out / "summary.md").read_text()
    through = live["websocket"]  # the same streams through a stream gateway's WebSocket, in the same run
    assert [level["streams"] for level in through["levels"]][:1] == [1] and through["levels"][0]["utterances"] > 0
    assert through["levels"][0]["utterances"] == live["levels"][0]["utterances"]  # the same conversation heard
    assert set(live["websocket_extra_delay_p90_s"]) >= {"1"}
    assert live["websocket_extra_delay_p90_s"]["1"] == round(through["levels"][0]["p90"] - live["levels"][0]["p90"], 3)
    assert "through the WebSocket" in (out / "summary.md").read_text()

    baseline = summary["systems"]["pytorch"]
    assert set(baseline["concurrency"]) == {"1"}
    for name in variants:
        system = summary["systems"][name]
        assert set(system["concurrency"]) == {"1", "2"} and set(system["client"]) == {"2"}
        memory = system["server_memory"]
        assert positive(memory["total_peak_rss_mib"]) and positive(memory["total_rss_mib_at_end"])
        assert {"tritonserver", "stub:acoustic_encoder", "stub:asr"} <= set(memory["processes"])
        assert all(positive(p["peak_rss_mib"]) and p["rss_mib"] <= p["peak_rss_mib"] for p in memory["processes"].values())
        assert set(memory["weights_mib"]) == set(ONNX_NETWORKS)
        for network in ONNX_NETWORKS:  # the served files, as they are on disk
            on_disk = size(network_file(work / f"repo_{name}-tiny", network)) / 2**20
            assert positive(on_disk) and memory["weights_mib"][network] == pytest.approx(on_disk, abs=0.01)
        ratio = memory["total_peak_rss_mib"] / sum(memory["weights_mib"].values())
        assert memory["peak_over_weights"] == pytest.approx(ratio, abs=0.01)
        assert positive(system["export"]["export_seconds"]) and positive(system["export"]["peak_rss_mib"])
    for name, system in summary["systems"].items():
        for levels in (system["concurrency"], system.get("client", {})):
            for figures in levels.values():
                assert figures["requests"] >= UTTERANCES
                for key in ("utterances_per_s", "audio_seconds_per_s"):
                    assert positive(figures[key]), (name, key)
                for q in ("p50", "p90", "p99"):
                    assert positive(figures["latency_ms"][q]), (name, q)

    assert "| fp32 |" in (out / "summary.md").read_text()


def test_streaming_only_stores_its_own_run_into_an_existing_summary(tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    out.mkdir()
    committed = json.loads((Path(__file__).resolve().parent.parent / "bench/results/summary.json").read_text())
    (out / "summary.json").write_text(json.dumps(committed))
    code = bench_main(["--streaming-only", "--preset", "tiny", "--utterances", str(UTTERANCES), "--concurrency", "1",
                       "--variants", "fp32", "--streaming-variants", "fp32", "--stream-seconds", "6",
                       "--most-streams", "1", "--out", str(out), "--work", str(work), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    live = summary.pop("streaming")["fp32"]
    assert summary == {key: value for key, value in committed.items() if key != "streaming"}  # the rest as it was
    assert live["measured_apart"] and live["preset"] == "tiny" and live["machine"]["cpu"]
    assert positive(live["throughput_audio_seconds_per_s"]) and live["levels"][0]["streams"] == 1
    assert "measured apart" in (out / "summary.md").read_text() and (out / "streaming.png").is_file()
