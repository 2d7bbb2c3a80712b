"""What the bench concludes from its measurements: each served variant against PyTorch, its share of
its ceiling, the best variant within the drift limits, and whether the bench's targets are met.

Computed from the summary's measured systems (bench/summary.py) and stored into the summary before
it is written; bench/report.py only renders it.
"""

from dataclasses import dataclass

from ser_triton.export.cpu_features import has_vnni

BASELINE = "pytorch"
"""The system every served variant is measured against: PyTorch eager fp32, one utterance at a time."""
SPEEDUP_TARGET_VNNI, SPEEDUP_TARGET = 4.0, 2.8
"""The speed-up over the baseline the best variant within the drift limits should reach, on a CPU
with int8 dot products (VNNI or AMX) and on one without."""


def best(levels: dict) -> tuple[str, dict]:
    """The concurrency with the most audio-seconds per second."""
    key = max(levels, key=lambda c: levels[c]["audio_seconds_per_s"])
    return key, levels[key]


@dataclass(frozen=True)
class Headline:
    """The ratios against PyTorch, each variant's efficiency, and the targets, per served variant."""

    best_concurrency: dict[str, int]
    """The perf_analyzer concurrency with the most audio-seconds per second."""
    speedup_vs_pytorch: dict[str, float]
    speedup_vs_best_pytorch: dict[str, float]
    p50_latency_c1_vs_pytorch: dict[str, float]
    efficiency: dict[str, float]
    """Audio-seconds per second at the best concurrency over the variant's ceiling."""
    best_within_drift_limits: str | None
    targets: dict[str, bool | None]
    """Each target: met, not met, or None where nothing could be judged."""

    @classmethod
    def of(cls, summary: dict) -> "Headline":
        """From the measured systems, the PyTorch variants, the ceilings and the drift verdicts."""
        base = summary["systems"][BASELINE]["concurrency"]["1"]
        best_pytorch = max(summary.get("pytorch_variants", {}).values(), default=base["audio_seconds_per_s"])
        concurrencies, speedups, versus_best, latency, efficiency = {}, {}, {}, {}, {}
        for name, system in summary["systems"].items():
            if name == BASELINE or not system.get("concurrency"):
                continue
            concurrency, top = best(system["concurrency"])
            speedups[name] = round(top["audio_seconds_per_s"] / base["audio_seconds_per_s"], 2)
            versus_best[name] = round(top["audio_seconds_per_s"] / best_pytorch, 2)
            concurrencies[name] = int(concurrency)
            if "1" in system["concurrency"]:
                latency[name] = round(system["concurrency"]["1"]["latency_ms"]["p50"] / base["latency_ms"]["p50"], 3)
            ceiling = summary.get("ceiling_audio_seconds_per_s", {}).get(name)
            if ceiling:
                efficiency[name] = round(top["audio_seconds_per_s"] / ceiling, 3)
        allowed = [n for n, ok in summary.get("within_drift_limits", {}).items() if ok and n in speedups]
        champion = max(allowed, key=speedups.get) if allowed else None
        bar = SPEEDUP_TARGET_VNNI if has_vnni(summary["machine"].get("isa", [])) else SPEEDUP_TARGET
        targets = {
            f"best_within_limits_at_least_{bar:g}x_pytorch_fp32_eager": speedups[champion] >= bar if champion else None,
            "best_within_limits_faster_than_best_pytorch": versus_best[champion] > 1.0 if champion else None,
            "best_within_limits_p50_latency_c1_at_most_0.3x": latency[champion] <= 0.3 if champion in latency else None,
            "fp32_at_least_80pct_of_fp32_ceiling": efficiency["fp32"] >= 0.8 if "fp32" in efficiency else None,
        }
        return cls(concurrencies, speedups, versus_best, latency, efficiency, champion, targets)

    def store(self, summary: dict) -> None:
        """Into the summary, under the keys summary.json gives them."""
        for name, concurrency in self.best_concurrency.items():
            summary["systems"][name]["best_concurrency"] = concurrency
        summary["speedup_vs_pytorch"] = self.speedup_vs_pytorch
        summary["speedup_vs_best_pytorch"] = self.speedup_vs_best_pytorch
        summary["p50_latency_c1_vs_pytorch"] = self.p50_latency_c1_vs_pytorch
        summary["efficiency"] = self.efficiency
        summary["best_within_drift_limits"] = self.best_within_drift_limits
        summary["targets"] = self.targets
