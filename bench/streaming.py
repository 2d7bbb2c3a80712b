"""`make bench`'s streaming stage: how many live calls one server follows, and how soon each answer comes.

K concurrent streams, each a conversation made of the workload's utterances with pauses between
them (1-2 s, seeded), paced in real time in 100 ms chunks as live calls arrive, for K = 1, 2,
4, ... For each K: the delay from the end of each utterance's speech to its result at the client
(p50, p90, p99), and whether every stream kept up: no backlog that grows over the run, so every
stream has had its last answer within one stream's p99 delay plus a second after its audio ended
(a backlog that grows ends a stream ever later; a delay that depends on the utterance's length
does not).

The end of speech is the workload's own: the last sample of the utterance's span that is speech
(above 1% of its utterance's peak; the pauses between utterances are silence), not the end the
server reports, which carries the segmenter's padding (0.15 s by default); both are kept. The
delay is the segmenter's wait (the pause that decides an end: 0.64 s by default) plus the
utterance's classification plus the way back; its floor is one utterance's own ensemble time,
measured after the single stream by classifying its utterances again, alone, one at a time
(`compute_floor_s`). The headline is the most streams sustained while every stream keeps up and
the p90 delay stays within 1 s of one utterance's own compute (the floor's p90), beside the
streams the served throughput could carry at full use for that speech share (audio-s/s over the
share of the audio that is speech); their ratio is the efficiency. The levels after one stream
double until one is not sustained, then the gap is halved until the most sustained is known.

`python -m ser_triton.bench.streaming --url HOST:PORT --label NAME --out FILE.json` measures a
server that is already running (`make serve`, a container, a pod) into a file of its own.
"""

import argparse
import json
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ser_triton.bench import report
from ser_triton.bench.workload import WORK, load_or_make
from ser_triton.client.library import ClientError, SERClient
from ser_triton.core.contract import SAMPLE_RATE

ROOT = Path(__file__).resolve().parent.parent
CHUNK_SECONDS = 0.1
DELAY_ALLOWANCE_S = 1.0
"""How much later than one utterance's own compute (the floor's p90) the p90 delay at K streams may be, for K
to count as sustained: the pause that decides an utterance's end, any wait, and the way back, together."""
BACKLOG_ALLOWANCE_S = 1.0
"""How long after its audio a stream may take to finish, beyond one stream's p99 delay."""
SPEECH_LEVEL = 0.01
"""A sample is speech from this share of its utterance's peak up (the workload's room noise is 1e-4)."""


def conversation(workload, seed: int, seconds: float) -> tuple[np.ndarray, float, np.ndarray]:
    """Utterances of the workload with 1-2 s pauses between them, about `seconds` long; its speech
    share; and which of its samples are speech."""
    random = np.random.default_rng(seed)
    order = random.permutation(len(workload.utterances))
    pieces, speech, total, index = [np.zeros(SAMPLE_RATE // 2, np.float32)], 0, SAMPLE_RATE // 2, 0
    while total < seconds * SAMPLE_RATE:
        audio = workload.utterances[order[index % len(order)]].samples()
        pause = np.zeros(int(random.uniform(1.0, 2.0) * SAMPLE_RATE), np.float32)
        pieces += [audio, pause]
        speech, total, index = speech + audio.size, total + audio.size + pause.size, index + 1
    spoken = [np.abs(piece) > SPEECH_LEVEL * np.abs(piece).max() if piece.any() else np.zeros(piece.size, bool)
              for piece in pieces]
    return np.concatenate(pieces), speech / total, np.concatenate(spoken)


def speech_end(spoken: np.ndarray, start: int, end: int) -> int | None:
    """Where the speech within samples [start, end) ends (None: there is none)."""
    inside = np.flatnonzero(spoken[start:end])
    return None if not inside.size else start + int(inside[-1]) + 1


def paced(audio: np.ndarray, began: float):
    size = int(CHUNK_SECONDS * SAMPLE_RATE)
    for start in range(0, audio.size, size):
        time.sleep(max(0.0, began + (start + size) / SAMPLE_RATE - time.monotonic()))
        yield audio[start:start + size]


def one_stream(url: str, audio: np.ndarray, out: dict) -> None:
    """out["utterances"]: (start sample, end sample, seconds from the stream's start to its result);
    out["interims"]: how many interim results came (a server that is behind drops stale ones)."""
    utterances, interims, began = [], 0, time.monotonic()
    try:
        with SERClient(url, timeout=120) as client:
            for event in client.stream(paced(audio, began)):
                if event.event == "utterance":
                    utterances.append((event.start_sample, event.end_sample, time.monotonic() - began))
                interims += event.event == "interim"
        out["utterances"], out["finished_after_s"] = utterances, time.monotonic() - began - audio.size / SAMPLE_RATE
        out["interims"] = interims
    except ClientError as error:
        out["error"] = str(error)


def percentiles(values) -> dict:
    values = np.asarray(values, dtype=float)
    if not values.size:
        return {"p50": None, "p90": None, "p99": None}
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 90, 99)}


def delays(utterances, spoken: np.ndarray) -> tuple[list[float], list[float]]:
    """(from the end of speech, from the end the server reported) of each utterance that holds speech."""
    from_speech, from_padded = [], []
    for start, end, at in utterances:
        spoke = speech_end(spoken, start, end)
        if spoke is not None:
            from_speech.append(at - spoke / SAMPLE_RATE)
            from_padded.append(at - end / SAMPLE_RATE)
    return from_speech, from_padded


def measure_level(url: str, workload, streams: int, seconds: float, finish_within: float | None,
                  stream=one_stream) -> dict:
    """K streams at once; finish_within: seconds after its audio that each must be done by (None: the
    first level, which sets it). The level's "_spans": its first stream's (audio, utterance spans).
    `stream(url, audio, out)`: one stream, as one_stream (bench.streaming_socket's: over the WebSocket)."""
    outs = [{} for _ in range(streams)]
    conversations = [conversation(workload, seed=number, seconds=seconds) for number in range(streams)]
    threads = [threading.Thread(target=stream, args=(url, audio, out), daemon=True)
               for (audio, _, _), out in zip(conversations, outs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds * 4 + 120)
    errors = [out.get("error", "did not finish") for out in outs if "utterances" not in out]
    measured = [delays(out["utterances"], spoken) for out, (_, _, spoken) in zip(outs, conversations)
                if "utterances" in out]
    from_speech = [d for speech, _ in measured for d in speech]
    from_padded = [d for _, padded in measured for d in padded]
    finished = [round(out["finished_after_s"], 3) for out in outs if "utterances" in out]
    level = {"streams": streams, "utterances": len(from_speech),
             "interims": sum(out.get("interims", 0) for out in outs), **percentiles(from_speech),
             "from_padded_end": percentiles(from_padded), "finished_after_audio_s": max(finished, default=None),
             "errors": errors[:3]}
    within = finish_within if finish_within is not None else level["p99"] + BACKLOG_ALLOWANCE_S
    level["kept_up"] = not errors and level["p99"] is not None and all(f <= within for f in finished)
    level["_spans"] = (conversations[0][0], [(start, end) for start, end, _ in outs[0].get("utterances", [])])
    return level


def replayed(audios: list, session, rules=None, tentative_after: int | None = None) -> list:
    """Each audio sent as the stage sends it (CHUNK_SECONDS chunks, then its end) through the segmenter
    the server runs, the VAD windows of all of them scored together as the stream model scores its
    streams' (segmentation.feed_together): for each audio, (samples sent when it was decided, event)
    of each event."""
    from ser_triton.serving.steps import segmentation as steps

    size = int(CHUNK_SECONDS * SAMPLE_RATE)
    segmenters = [steps.Segmenter(steps.SpeechDetector(session), rules, tentative_after) for _ in audios]
    found = [[] for _ in audios]
    for first in range(0, max((audio.size for audio in audios), default=0) + size, size):
        going = [row for row, audio in enumerate(audios) if first < audio.size]
        decided = steps.feed_together([segmenters[row] for row in going],
                                      [audios[row][first:first + size] for row in going])
        ending = [(row, segmenters[row].finish()) for row, audio in enumerate(audios)
                  if audio.size <= first < audio.size + size]
        for row, events in [*zip(going, decided), *ending]:
            found[row] += [(min(first + size, audios[row].size), event) for event in events]
    return found


def classified_audio(workload, seconds: float, streams: int = 8) -> dict:
    """What the stream model has the ensemble classify besides the utterances themselves, in seconds per
    second of utterance audio, over the conversations of `streams` streams, decided offline by the
    segmenter the server runs (its default rules; the VAD from the silero-vad package): interims over
    the last 5 s, interims over all of each utterance so far (as before the window), and the tentative
    ends that a pause inside a turn withdraws (classifying ahead after 0.15 s: wasted where they ran)."""
    from ser_triton.export.repository import vad_package_file
    from ser_triton.serving.steps import segmentation as steps

    session, found = steps.vad_session(vad_package_file()), {}
    ways = {"window": (steps.SegmentationRules(), round(0.15 * SAMPLE_RATE)),
            "whole": (steps.SegmentationRules(interim_window_seconds=None), None)}
    audios = [conversation(workload, seed=seed, seconds=seconds)[0] for seed in range(streams)]
    for way, (rules, ahead) in ways.items():
        for events in replayed(audios, session, rules, ahead):
            for _, event in events:
                if not isinstance(event, steps.SpeechStart):
                    key = f"{way}:{type(event).__name__}"
                    found[key] = found.get(key, 0) + event.end - event.start
    utterances = found["window:Utterance"]
    return {"utterance_seconds": round(utterances / SAMPLE_RATE, 1),
            "interims_last_5_s": round(found.get("window:Interim", 0) / utterances, 3),
            "interims_whole_so_far": round(found.get("whole:Interim", 0) / utterances, 3),
            "tentative_ends_withdrawn_after_0_15_s": round(found.get("window:Withdrawn", 0) / utterances, 3)}


def compute_floor(url: str, audio: np.ndarray, spans) -> dict:
    """One utterance's own ensemble time: each span classified alone, one at a time, on the idle server;
    "_samples": (audio seconds, compute seconds) of each (bench.streaming_ideal fits them)."""
    seconds = []
    with SERClient(url, timeout=120, segmenter="fixed") as client:
        for start, end in spans:
            began = time.perf_counter()
            client.classify(audio[start:end], sample_rate=SAMPLE_RATE)
            seconds.append(time.perf_counter() - began)
    return {"utterances": len(seconds), **percentiles(seconds),
            "_samples": [((end - start) / SAMPLE_RATE, took) for (start, end), took in zip(spans, seconds)]}


def measure(url: str, workload, throughput_audio_s_per_s: float | None, seconds: float = 60.0,
            most: int = 16, stream=one_stream) -> dict:
    """One stream, then the compute floor (its utterances alone, over gRPC at `url`), then more streams:
    doubling until a level is not sustained, then halving the gap between the most sustained and the
    fewest not. `stream`: how each stream goes (measure_level)."""
    from ser_triton.bench import streaming_ideal  # it reads this module's conversations

    _, speech_share, _ = conversation(workload, seed=0, seconds=seconds)
    single = measure_level(url, workload, 1, seconds, None, stream)
    floor = compute_floor(url, *single.pop("_spans"))
    floor_samples = floor.pop("_samples")
    allowed = None if floor["p90"] is None else round(floor["p90"] + DELAY_ALLOWANCE_S, 3)
    within = None if single["p99"] is None else single["p99"] + BACKLOG_ALLOWANCE_S
    levels = {}

    def judge(level: dict) -> bool:
        level["p90_over_compute_s"] = None if level["p90"] is None or floor["p90"] is None \
            else round(level["p90"] - floor["p90"], 3)
        level["sustained"] = bool(level["kept_up"] and allowed is not None and level["p90"] is not None
                                  and level["p90"] <= allowed)
        levels[level["streams"]] = level
        return level["sustained"]

    sustained, failed = (1, None) if judge(single) else (0, 1)
    while failed is None and 2 * sustained <= most:
        level = measure_level(url, workload, 2 * sustained, seconds, within, stream)
        level.pop("_spans")
        sustained, failed = (2 * sustained, None) if judge(level) else (sustained, 2 * sustained)
    while failed is not None and failed - sustained > 1:
        middle = (sustained + failed) // 2
        level = measure_level(url, workload, middle, seconds, within, stream)
        level.pop("_spans")
        sustained, failed = (middle, failed) if judge(level) else (sustained, middle)
    capacity = None if not throughput_audio_s_per_s else throughput_audio_s_per_s / speech_share
    max_streams = max([streams for streams, level in levels.items() if level["sustained"]], default=0)
    return {
        "description": f"K live streams paced in real time ({CHUNK_SECONDS * 1000:.0f} ms chunks) of {seconds:g} s "
                       "conversations (workload utterances, 1-2 s pauses); delay = result at the client - the end "
                       "of the utterance's speech (from_padded_end: - the end the server reported, padding "
                       "included); compute_floor_s: the single stream's utterances classified again, alone, one "
                       f"at a time; sustained: kept up, and the p90 delay within {DELAY_ALLOWANCE_S:g} s of the "
                       "floor's p90 (p90_over_compute_s); levels: 1, doubling until one is not sustained, then "
                       "halving the gap",
        "stream_seconds": seconds, "speech_share": round(speech_share, 3),
        "classified_besides_utterances": classified_audio(workload, seconds),
        "single_stream": {key: single[key] for key in ("p50", "p90", "p99")},
        "compute_floor_s": floor,
        "sustained_p90_at_most_s": allowed,
        "levels": [levels[streams] for streams in sorted(levels)],
        "max_streams": max_streams,
        "throughput_streams": None if capacity is None else round(capacity, 2),
        "efficiency": None if not capacity else round(max_streams / capacity, 3),
        **({"ideal": streaming_ideal.measure(workload, seconds, throughput_audio_s_per_s, speech_share, floor_samples,
                                             allowed)} if capacity and floor_samples else {}),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_triton.bench.streaming", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the running server's gRPC host:port (its edge, say)")
    parser.add_argument("--label", required=True, help="what it serves, for the file (e.g. tiny, full-random fp32)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--stream-seconds", type=float, default=60.0, help="length of each paced stream (default 60)")
    parser.add_argument("--most-streams", type=int, default=16, help="the most concurrent streams tried (default 16)")
    parser.add_argument("--utterances", type=int, default=40, help="workload size (default 40, as make bench)")
    parser.add_argument("--work", type=Path, default=WORK, help="cache of the workload (default bench/work)")
    parser.add_argument("--socket-url", metavar="ws://HOST:PORT/v1/stream",
                        help="measure the same through this WebSocket too, beside gRPC (bench.streaming_socket)")
    args = parser.parse_args(argv)
    workload = load_or_make(args.utterances, 0, args.work / "workload")
    with SERClient(args.url, retries=0) as client:
        if not client.ready():
            print(f"bench.streaming: no ready server at {args.url}: start one (make serve) or check --url",
                  file=sys.stderr)
            return 1
    load_before = report.load_average()
    if args.socket_url:
        from ser_triton.bench.streaming_socket import measure_both
        live = measure_both(args.url, args.socket_url, workload, None, args.stream_seconds, args.most_streams)
    else:
        live = measure(args.url, workload, None, args.stream_seconds, args.most_streams)
    described = workload.describe()
    if Path(described["directory"]).is_relative_to(ROOT):  # no path of this machine in a file to commit
        described["directory"] = str(Path(described["directory"]).relative_to(ROOT))
    live |= {"served": args.label, "workload": described,
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": report.machine(),
             "load_average": {"before": load_before, "after": report.load_average()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(live, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
