"""`make bench`'s streaming stage: how many live calls one server follows, and how soon each answer comes.

K concurrent streams, each a conversation made of the workload's utterances with pauses between
them (1-2 s, seeded), paced in real time in 100 ms chunks as live calls arrive, for K = 1, 2,
4, ... For each K: the delay from an utterance's end (as the server reports it) to its result
at the client (p50, p90, p99), and whether every stream kept up: no backlog that grows over the
run, so every stream has had its last answer within one stream's p99 delay plus a second after
its audio ended (a backlog that grows ends a stream ever later; a delay that depends on the
utterance's length does not). One utterance's own compute is a floor on the delay, so the headline is the most
streams sustained while the p90 delay stays within 1 s of the single stream's p90, beside the
streams the served throughput could carry at full use for that speech share (audio-s/s over
the share of the audio that is speech); their ratio is the efficiency.
"""

import threading
import time

import numpy as np

from ser_triton.client.library import ClientError, SERClient
from ser_triton.core.contract import SAMPLE_RATE

CHUNK_SECONDS = 0.1
DELAY_ALLOWANCE_S = 1.0
"""How much later than one stream's p90 the p90 at K streams may be, for K to count as sustained."""
BACKLOG_ALLOWANCE_S = 1.0
"""How long after its audio a stream may take to finish, beyond one stream's p99 delay."""


def conversation(workload, seed: int, seconds: float) -> tuple[np.ndarray, float]:
    """Utterances of the workload with 1-2 s pauses between them, about `seconds` long; its speech share."""
    random = np.random.default_rng(seed)
    order = random.permutation(len(workload.utterances))
    pieces, speech, total, index = [np.zeros(SAMPLE_RATE // 2, np.float32)], 0, SAMPLE_RATE // 2, 0
    while total < seconds * SAMPLE_RATE:
        audio = workload.utterances[order[index % len(order)]].samples()
        pause = np.zeros(int(random.uniform(1.0, 2.0) * SAMPLE_RATE), np.float32)
        pieces += [audio, pause]
        speech, total, index = speech + audio.size, total + audio.size + pause.size, index + 1
    return np.concatenate(pieces), speech / total


def paced(audio: np.ndarray, began: float):
    size = int(CHUNK_SECONDS * SAMPLE_RATE)
    for start in range(0, audio.size, size):
        time.sleep(max(0.0, began + (start + size) / SAMPLE_RATE - time.monotonic()))
        yield audio[start:start + size]


def one_stream(url: str, audio: np.ndarray, out: dict) -> None:
    delays, began = [], time.monotonic()
    try:
        with SERClient(url, timeout=120) as client:
            for event in client.stream(paced(audio, began)):
                if event.event == "utterance":
                    delays.append((event.end, time.monotonic() - began - event.end))
        out["delays"], out["finished_after_s"] = delays, time.monotonic() - began - audio.size / SAMPLE_RATE
    except ClientError as error:
        out["error"] = str(error)


def percentiles(values) -> dict:
    values = np.asarray(values, dtype=float)
    if not values.size:
        return {"p50": None, "p90": None, "p99": None}
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 90, 99)}


def measure_level(url: str, workload, streams: int, seconds: float, finish_within: float | None) -> dict:
    """K streams at once; finish_within: seconds after its audio that each must be done by (None: the
    first level, which sets it)."""
    outs = [{} for _ in range(streams)]
    threads = []
    for number, out in enumerate(outs):
        audio, _ = conversation(workload, seed=number, seconds=seconds)
        threads.append(threading.Thread(target=one_stream, args=(url, audio, out), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds * 4 + 120)
    errors = [out.get("error", "did not finish") for out in outs if "delays" not in out]
    delays = [d for out in outs if "delays" in out for _, d in out["delays"]]
    finished = [round(out["finished_after_s"], 3) for out in outs if "delays" in out]
    level = {"streams": streams, "utterances": len(delays), **percentiles(delays),
             "finished_after_audio_s": max(finished, default=None), "errors": errors[:3]}
    within = finish_within if finish_within is not None else level["p99"] + BACKLOG_ALLOWANCE_S
    level["kept_up"] = not errors and level["p99"] is not None and all(f <= within for f in finished)
    return level


def measure(url: str, workload, throughput_audio_s_per_s: float | None, seconds: float = 60.0,
            most: int = 16) -> dict:
    """Levels 1, 2, 4, ... up to `most`, until a level is not sustained."""
    _, speech_share = conversation(workload, seed=0, seconds=seconds)
    levels, streams = [], 1
    while streams <= most:
        single = levels[0] if levels else None
        level = measure_level(url, workload, streams, seconds,
                              None if single is None else single["p99"] + BACKLOG_ALLOWANCE_S)
        levels.append(level)
        single = levels[0]
        sustained = level["kept_up"] and level["p90"] is not None and single["p90"] is not None \
            and level["p90"] <= single["p90"] + DELAY_ALLOWANCE_S
        level["sustained"] = bool(sustained)
        if not sustained:
            break
        streams *= 2
    sustained = [level["streams"] for level in levels if level["sustained"]]
    capacity = None if not throughput_audio_s_per_s else throughput_audio_s_per_s / speech_share
    max_streams = max(sustained, default=0)
    return {
        "description": f"K live streams paced in real time ({CHUNK_SECONDS * 1000:.0f} ms chunks) of {seconds:g} s "
                       "conversations (workload utterances, 1-2 s pauses); delay = result at the client - "
                       "the utterance's end",
        "stream_seconds": seconds, "speech_share": round(speech_share, 3),
        "single_stream": {key: levels[0][key] for key in ("p50", "p90", "p99")},
        "levels": levels,
        "max_streams": max_streams,
        "throughput_streams": None if capacity is None else round(capacity, 2),
        "efficiency": None if not capacity else round(max_streams / capacity, 3),
    }
