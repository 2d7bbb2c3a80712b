"""Throughput and latency figures, computed the same way for every system."""

import numpy as np


def percentiles_ms(latencies_s) -> dict:
    values = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    return {f"p{q}": round(float(np.percentile(values, q)), 1) for q in (50, 90, 99)} | {
        "mean": round(float(values.mean()), 1)}


def rates(latencies_s, audio_seconds, wall_s: float) -> dict:
    """Per-request latencies and audio lengths measured over `wall_s` seconds of wall time."""
    count = len(latencies_s)
    return {
        "requests": count,
        "wall_seconds": round(wall_s, 2),
        "utterances_per_s": round(count / wall_s, 3),
        "audio_seconds_per_s": round(float(np.sum(audio_seconds)) / wall_s, 3),
        "latency_ms": percentiles_ms(latencies_s),
    }
