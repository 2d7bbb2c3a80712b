"""summary.json of a whole run: what each stage measured, the drift of each variant from fp32, the
ceilings and the headline (bench/analysis.py), with the notes that say how to read them.
"""

import dataclasses
from datetime import datetime, timezone

from ser_triton.bench import analysis, ceilings, report
from ser_triton.bench import drift as drift_of
from ser_triton.bench.baseline import BASELINE_VARIANT

GFLOP_PER_AUDIO_SECOND = sum(ceilings.GFLOP_PER_AUDIO_SECOND.values())


@dataclasses.dataclass
class Measured:
    """What a whole run measured, stage by stage."""
    workload: object
    """bench.workload.Workload"""
    perf_analyzer_version: str
    pytorch: dict
    """PyTorch variant -> its bench/baseline.py measurement."""
    pytorch_skipped: dict
    """PyTorch variant -> why it was not measured."""
    exports: dict
    """Served variant -> bench.exports.ensure_export's answer."""
    systems: dict
    """analysis.BASELINE and each served variant -> its measurement (bench.variants.run_variant)."""
    answers: dict
    """Served variant -> its answers as prediction records."""
    gemm_rates: dict
    """Precision key -> this CPU's GEMM GFLOP/s on 2 threads (bench/ceilings.py)."""


def served_precisions(systems: dict, variants: list[str]) -> dict:
    """Variant -> network -> the precision key (bench/ceilings.py) each network is served in."""
    return {variant: systems[variant].get("precision", {}).get(
        "serving", {name: "fp32" for name in ceilings.GFLOP_PER_AUDIO_SECOND}) for variant in variants}


def build(args, measured: Measured, load_before: list[float]) -> dict:
    rates, pytorch, workload = measured.gemm_rates, measured.pytorch, measured.workload
    summary = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "preset": args.preset,
        "machine": report.machine() | {"perf_analyzer": measured.perf_analyzer_version,
                                       "fp32_gemm_gflops_2_threads": rates["fp32"]},
        "load_average": {"before": load_before, "after": report.load_average()},
        "workload": workload.describe() | {"directory": str(workload.directory.relative_to(args.work.parent))
                                           if workload.directory.is_relative_to(args.work.parent)
                                           else str(workload.directory)},
        "speedup_vs_pytorch": {},
        "p50_latency_c1_vs_pytorch": {},
        "pytorch_variants": {name: run["concurrency"]["1"]["audio_seconds_per_s"] for name, run in pytorch.items()},
        "pytorch_variants_skipped": measured.pytorch_skipped,
        "pytorch_variant_runs": {name: run for name, run in pytorch.items() if name != BASELINE_VARIANT},
        "gemm_gflops_2_threads": rates,
        "systems": measured.systems,
        "notes": NOTES,
    }
    answers = measured.answers
    if "fp32" in answers:
        summary["drift"] = {variant: drift_of.drift(answers["fp32"], answers[variant],
                                                    measured.exports[variant]["report"])
                            for variant in args.variants if variant != "fp32"}
        summary["within_drift_limits"] = {variant: not drift_of.violations(drift)
                                          for variant, drift in summary["drift"].items()}
        summary["within_drift_limits"]["fp32"] = True
        summary["drift_limits"] = dataclasses.asdict(drift_of.DRIFT_LIMITS)
    summary["ceiling_audio_seconds_per_s"] = {
        variant: round(ceilings.ceiling(keys, rates), 3)
        for variant, keys in served_precisions(measured.systems, args.variants).items()}
    if args.preset == "full-random":
        summary["analysis"] = baseline_analysis(summary["pytorch_variants"][BASELINE_VARIANT], rates["fp32"])
    summary["streaming"] = {variant: system["streaming"] for variant, system in measured.systems.items()
                            if "streaming" in system}
    analysis.Headline.of(summary).store(summary)
    return summary


def baseline_analysis(rate: float, fp32_gemm_gflops: float) -> dict:
    """How much of this CPU's fp32 GEMM rate the PyTorch baseline (`rate` audio-s/s) uses."""
    return {
        "gflop_per_audio_second_estimate": GFLOP_PER_AUDIO_SECOND,
        "baseline_effective_gflops": round(rate * GFLOP_PER_AUDIO_SECOND, 1),
        "baseline_fraction_of_fp32_gemm_peak": round(rate * GFLOP_PER_AUDIO_SECOND / fp32_gemm_gflops, 3),
        "fp32_ceiling_speedup": round(fp32_gemm_gflops / (rate * GFLOP_PER_AUDIO_SECOND), 2),
        "meaning": "an fp32 system doing the pipeline's work at this CPU's full GEMM rate (never reached: "
                   "softmax, norms, GELU and the conv front end run below it) would be fp32_ceiling_speedup "
                   "times the baseline",
    }


NOTES = [
    "speedup_vs_pytorch: audio-seconds per second of the variant at its best perf_analyzer concurrency divided by "
    "PyTorch eager fp32's (one utterance at a time) from the same run; speedup_vs_best_pytorch divides by the best "
    "PyTorch variant (pytorch_variants) instead.",
    "perf_analyzer rows: one measurement of whole rounds of the workload per concurrency (--request-count), "
    "throughput and latencies from its per-request profile export (first request sent to last answer; "
    "audio-seconds = the real length of each request). Client-library rows: classify_many over the wav files.",
    "Latencies are per utterance, request to answer (perf_analyzer: client-side; PyTorch: one classify call).",
    "drift: each variant's served answers (client library, last client concurrency) against served fp32's on the "
    "whole workload; min_hidden_cosine from the export's measurement on the same workload; within_drift_limits "
    "against export.precision.DRIFT_LIMITS. Random weights make near-ties everywhere (transcript characters, "
    "emotions), so these are harsher than a trained model's drift.",
    "efficiency: audio-seconds per second at the best concurrency divided by ceiling_audio_seconds_per_s, what the "
    "variant's networks would reach at their own precision's GEMM rate (bench/ceilings.py).",
    "streaming: K streams at once, each a conversation of workload utterances with 1-2 s pauses paced in real time "
    "in 100 ms chunks; delay = the utterance's result at the client minus its end in the stream; kept_up = every "
    "stream finished within one stream's p99 delay + 1 s after its audio ended (no growing backlog); max_streams = "
    "the most streams kept up with the p90 delay within 1 s of one utterance's own compute (compute_floor_s p90: the "
    "single stream's utterances classified alone, one at a time); throughput_streams = the variant's "
    "best perf_analyzer audio-s/s over the conversations' speech share; efficiency = max_streams / throughput_streams.",
    "streaming.ideal: what an ideal server would sustain on the same compute (no per-stream cost, no interims, each "
    "utterance taken when its end is decided, first come first served at the throughput, answered one utterance's "
    "own compute later): with the segmenter's ends (replayed offline) and with each end known at once (oracle), "
    "judged as the stage judges (bench/streaming_ideal.py).",
    "server_memory.total_peak_rss_mib adds the peak RSS (VmHWM) of tritonserver and every Python stub; "
    "shared pages count once per process, so it is an upper bound. weights_mib: each network's ONNX files on disk; "
    "peak_over_weights: total_peak_rss_mib over their sum.",
    "streaming.websocket: the same streams through the WebSocket /v1/stream of a stream gateway beside the server, "
    "in the same run (live, f32le at 16 kHz); websocket_extra_delay_p90_s: its p90 delay minus gRPC's, by streams.",
]
