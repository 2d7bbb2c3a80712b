"""summary.json -> summary.md (tables) and throughput_latency.png, rendering what the summary holds (its
headline is bench.analysis's); the machine's description."""

import json
import os
import sys
from pathlib import Path

from ser_triton.bench.analysis import BASELINE
from ser_triton.export.cpu_features import machine  # noqa: F401  the summary's machine


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(summary: dict) -> str:
    lines = [f"# Benchmark: served `ser` ensemble vs the PyTorch research pipeline ({summary['mode']} run)", ""]
    m = summary["machine"]
    w = summary["workload"]
    lines += [
        f"- Machine: {m['cpu']}, {m['usable_cores']} cores, {m['memory_gib']} GiB; "
        f"load average before/after: {summary['load_average']['before']} / {summary['load_average']['after']}",
        f"- Model: preset `{summary['preset']}`; workload: {w['utterances']} utterances, {w['audio_seconds']} s of audio "
        f"(mean {w['mean_seconds']} s, {w['min_seconds']}-{w['max_seconds']} s), {w['source']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- ISA: {', '.join(m.get('isa', [])) or 'unknown'}; GEMM rate, 2 threads, GFLOP/s: "
        + ", ".join(f"{k} {v}" for k, v in summary.get("gemm_gflops_2_threads", {}).items()),
        "",
        "## Headline",
        "",
        _row(["variant", "vs PyTorch eager fp32 (audio-s/s, best c)", "vs best PyTorch", "p50 at c=1 vs PyTorch",
              "efficiency (of its ceiling)", "within drift limits", "server peak RSS (MiB)", "weights on disk (MiB)",
              "peak / weights", "export (s)", "export peak RSS (MiB)"]),
        _row(["---"] * 11),
    ]
    for name, system in summary["systems"].items():
        if name == BASELINE:
            continue
        export, memory = system.get("export", {}), system.get("server_memory", {})
        lines.append(_row([
            name, f"{summary['speedup_vs_pytorch'].get(name, '-')}x (c={system.get('best_concurrency', '-')})",
            f"{summary.get('speedup_vs_best_pytorch', {}).get(name, '-')}x",
            summary["p50_latency_c1_vs_pytorch"].get(name, "-"),
            summary.get("efficiency", {}).get(name, "-"),
            {True: "yes", False: "**no**"}.get(summary.get("within_drift_limits", {}).get(name), "-"),
            memory.get("total_peak_rss_mib", "-"), round(sum(memory.get("weights_mib", {}).values()), 1) or "-",
            memory.get("peak_over_weights", "-"), export.get("export_seconds", "-"), export.get("peak_rss_mib", "-"),
        ]))
    lines.append("")
    if summary.get("best_within_drift_limits"):
        lines.append(f"- Best variant within the drift limits: **{summary['best_within_drift_limits']}**")
    variants = summary.get("pytorch_variants", {})
    if variants:
        lines.append("- PyTorch variants (audio-s/s, one utterance at a time): "
                     + ", ".join(f"{k} {v}" for k, v in variants.items())
                     + "".join(f"; {k} skipped: {v}" for k, v in summary.get("pytorch_variants_skipped", {}).items()))
    for name, system in summary["systems"].items():
        chosen = system.get("precision", {}).get("chosen")
        if chosen:
            lines.append(f"- {name} serves: " + ", ".join(f"{n} {v}" for n, v in chosen.items()))
    for name, system in summary["systems"].items():
        if system.get("deployment"):
            d = system["deployment"]
            lines.append(f"- {name}: `{system['export']['command']}`; per network: max_batch_size {d['max_batch_size']}, "
                         f"{d['intra_op_threads_per_network']} ONNX Runtime thread(s), {d['instances_per_network']} instance(s)")
    analysis = summary.get("analysis")
    if analysis:
        lines.append(f"- fp32 ceiling: the baseline does ~{analysis['baseline_effective_gflops']} GFLOP/s "
                     f"({analysis['baseline_fraction_of_fp32_gemm_peak']:.0%} of the GEMM rate, at "
                     f"~{analysis['gflop_per_audio_second_estimate']:g} GFLOP per audio-second), so no fp32 system can "
                     f"exceed ~{analysis['fp32_ceiling_speedup']}x it on this CPU")
    targets = summary.get("targets", {})
    if targets:
        lines += ["", "Targets: " + ", ".join(f"{k} **{'met' if v else 'not met'}**" for k, v in targets.items()
                                               if v is not None)]
    lines += ["", "## Throughput and latency", "",
              _row(["system", "driver", "concurrency", "utterances/s", "audio-s/s", "p50 ms", "p90 ms", "p99 ms"]),
              _row(["---"] * 8)]
    for name, system in summary["systems"].items():
        for driver, key in (("perf_analyzer" if name != BASELINE else "sequential", "concurrency"),
                            ("client library", "client")):
            for concurrency, r in system.get(key, {}).items():
                lat = r["latency_ms"]
                lines.append(_row([name, driver, concurrency, r["utterances_per_s"], r["audio_seconds_per_s"],
                                   lat["p50"], lat["p90"], lat["p99"]]))
    drift = summary.get("drift", {})
    if drift:
        lines += ["", "## Drift from served fp32 on the whole workload", "",
                  f"Limits (export.precision.DRIFT_LIMITS): {summary.get('drift_limits')}", "",
                  _row(["variant", "label agreement (decisive: share / n)", "transcript CER",
                        "decisive CTC frames agreeing", "max probability diff", "min hidden-state cosine",
                        "within limits"]), _row(["---"] * 7)]
        for name, d in drift.items():
            decisive = "-" if d["decisive_label_agreement"] is None else f"{d['decisive_label_agreement']:.3f}"
            frames = "-" if d["decisive_frame_agreement"] is None else f"{d['decisive_frame_agreement']:.4f}"
            lines.append(_row([name, f"{d['label_agreement']:.3f} ({decisive} / {d['decisive_utterances']})",
                               f"{d['transcript_cer']:.4f}", frames, f"{d['max_probability_diff']:.4f}",
                               f"{d['min_hidden_cosine']:.5f}",
                               "yes" if summary["within_drift_limits"].get(name) else "**no**"]))
    if summary.get("streaming"):
        lines += ["", "## Live streams (paced in real time)", "",
                  _row(["variant", "streams", "utterances", "delay p50 (s)", "p90", "p99", "kept up", "sustained"]),
                  _row(["---"] * 8)]
        for name, live in summary["streaming"].items():
            for level in live["levels"]:
                lines.append(_row([name, level["streams"], level["utterances"], level["p50"], level["p90"],
                                   level["p99"], "yes" if level["kept_up"] else "**no**",
                                   "yes" if level.get("sustained") else "no"]))
        for name, live in summary["streaming"].items():
            if live.get("measured_apart"):
                lines.append(f"\n{name} measured apart ({live['created']}, {live['machine']['cpu']}, "
                             f"{live['preset']}): its own perf_analyzer throughput "
                             f"{live['throughput_audio_seconds_per_s']} audio-s/s")
        lines += [""] + [f"- {name}: at most **{live['max_streams']}** streams sustained (p90 at most "
                         f"{live.get('sustained_p90_at_most_s')} s: within 1 s of one utterance's own compute, "
                         f"{live.get('compute_floor_s', {}).get('p90')} s at p90); the throughput could carry "
                         f"{live['throughput_streams']} at a speech share of {live['speech_share']}: efficiency "
                         f"{live['efficiency']}" for name, live in summary["streaming"].items()]
        lines += [f"- {name}, an ideal server on the same compute (no per-stream cost, no interims, first come "
                  f"first served at the throughput; bench/streaming_ideal.py): {ideal['segmenter']['max_streams']} "
                  f"streams with the segmenter's ends (efficiency {ideal['segmenter']['efficiency']}), "
                  f"{ideal['oracle']['max_streams']} with each end known at once ({ideal['oracle']['efficiency']})"
                  for name, live in summary["streaming"].items() if (ideal := live.get("ideal"))]
        lines += [f"- {name} through the WebSocket: at most **{live['websocket']['max_streams']}** streams "
                  f"sustained; its p90 delay minus gRPC's, by streams: {live['websocket_extra_delay_p90_s']} s"
                  for name, live in summary["streaming"].items() if "websocket" in live]
    if summary.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in summary["notes"]]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(summary: dict, path: Path) -> None:
    plt = _pyplot()
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    base = summary["systems"][BASELINE]["concurrency"]["1"]
    for name, system in summary["systems"].items():
        if name == BASELINE:
            continue
        levels = sorted(system.get("concurrency", {}), key=int)
        xs = [int(c) for c in levels]
        line, = throughput.plot(xs, [system["concurrency"][c]["audio_seconds_per_s"] for c in levels], "o-",
                                label=f"{name} (perf_analyzer)")
        latency.plot(xs, [system["concurrency"][c]["latency_ms"]["p50"] for c in levels], "o-", color=line.get_color(),
                     label=f"{name} p50")
        latency.plot(xs, [system["concurrency"][c]["latency_ms"]["p90"] for c in levels], "--", color=line.get_color(),
                     alpha=0.6, label=f"{name} p90")
        client = system.get("client", {})
        if client:
            cs = sorted(client, key=int)
            throughput.plot([int(c) for c in cs], [client[c]["audio_seconds_per_s"] for c in cs], "x:",
                            color=line.get_color(), label=f"{name} (client library)")
    for axis, value, label in ((throughput, base["audio_seconds_per_s"], "PyTorch eager (sequential)"),
                               (latency, base["latency_ms"]["p50"], "PyTorch eager p50")):
        axis.axhline(value, color="black", linestyle="-.", linewidth=1, label=label)
    throughput.set(xscale="log", xlabel="concurrent requests", ylabel="audio seconds per second",
                   title="Throughput", ylim=(0, None))
    latency.set(xscale="log", xlabel="concurrent requests", ylabel="latency (ms)", title="Latency per utterance",
                ylim=(0, None))
    for axis in (throughput, latency):
        axis.minorticks_off()
        axis.set_xticks([1, 2, 4, 8], labels=["1", "2", "4", "8"])
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"ser ensemble on Triton vs PyTorch eager — {summary['machine']['cpu']}, "
                    f"{summary['machine']['usable_cores']} cores ({summary['preset']}, {summary['mode']})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_streaming(summary: dict, path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for name, live in summary["streaming"].items():
        xs = [level["streams"] for level in live["levels"]]
        line, = axis.plot(xs, [level["p50"] for level in live["levels"]], "o-", label=f"{name} p50")
        axis.plot(xs, [level["p90"] for level in live["levels"]], "--", color=line.get_color(), label=f"{name} p90")
        axis.axvline(live["max_streams"], color=line.get_color(), linestyle=":", alpha=0.7,
                     label=f"{name}: {live['max_streams']} sustained")
    levels = sorted({level["streams"] for live in summary["streaming"].values() for level in live["levels"]})
    axis.set(xscale="log", xlabel="concurrent live streams", ylabel="utterance end -> result (s)",
             title="Live streams paced in real time", ylim=(0, None))
    axis.minorticks_off()
    axis.set_xticks(levels, labels=[str(level) for level in levels])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    live = next(iter(summary["streaming"].values()))
    measured_on = live.get("machine", summary["machine"])  # a streaming run measured apart names its own
    figure.suptitle(f"{measured_on['cpu']}, {measured_on['usable_cores']} cores "
                    f"({live.get('preset', summary['preset'])})",
                    fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(summary: dict, directory: Path) -> dict:
    """summary.json as given (its headline already stored: bench.analysis), and what it renders into."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "summary.json", "md": directory / "summary.md",
             "png": directory / "throughput_latency.png"}
    paths["json"].write_text(json.dumps(summary, indent=1) + "\n")
    paths["md"].write_text(markdown(summary))
    plot(summary, paths["png"])
    if summary.get("streaming"):
        paths["streaming_png"] = directory / "streaming.png"
        plot_streaming(summary, paths["streaming_png"])
    return paths


if __name__ == "__main__":  # re-render from a summary.json: python -m ser_triton.bench.report bench/results
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    write(json.loads((target / "summary.json").read_text()), target)
