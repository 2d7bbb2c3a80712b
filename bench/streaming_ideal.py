"""What an ideal server would do with the streaming stage's streams: how many it could follow on the
measured compute alone, so that a shortfall of the stage's max_streams reads as the serving's (per-stream
work, scheduling, interims) or as the machine's (one utterance's compute and the throughput).

The ideal server has no per-stream cost and classifies no interims; it takes each utterance the moment
its end is decided, first come first served at the served throughput (each holds the server for its audio
seconds / the throughput), and answers one utterance's own compute after it starts (the compute floor,
fitted linear in the utterance's length). When each end is decided comes from replaying the stage's own
conversations, in its 100 ms chunks, through the server's segmenter (its default rules, Silero VAD from
the silero-vad package): `segmenter`. `oracle` knows each end the moment the padding after the speech
has arrived: no endpointing rule decides sooner, so its figure bounds what any pause rule could give.
Delay = answer - end of speech, judged as the stage judges it (p90 within 1 s of the floor's p90).
Where even the oracle stays under 0.8 of the throughput, no scheduling of whole utterances reaches
that on this machine: it takes a single utterance computed faster (more cores on one, a GPU).
"""

import numpy as np

from ser_triton.bench.streaming import conversation, replayed, speech_end
from ser_triton.core.contract import SAMPLE_RATE

ENDPOINTS = ("segmenter", "oracle")
_SEGMENTED: dict = {}
"""utterances() by (workload folder, seconds), then seed: the stage asks twice (gRPC, then the WebSocket)."""
REPLAYED_TOGETHER = 32
"""Streams replayed at once (their VAD batched, as on the server): a few times faster than one by one."""


def fit_floor(samples) -> tuple[float, float]:
    """(fixed seconds, seconds per audio second) of one utterance's own compute, by least squares over
    the floor's (audio seconds, compute seconds); one length only: proportional."""
    lengths, seconds = (np.asarray(values, dtype=float) for values in zip(*samples))
    if np.ptp(lengths) < 1e-3:
        return 0.0, float(seconds.mean() / lengths.mean())
    slope, fixed = np.polyfit(lengths, seconds, 1)
    return float(max(fixed, 0.0)), float(max(slope, 0.0))


def utterances(workload, seed: int, seconds: float, session) -> list[tuple[float, float, float, float]]:
    """(end decided by the segmenter, end known to the oracle, end of speech, audio seconds) of each
    utterance holding speech in stream `seed`'s conversation, in seconds from its start; the streams
    from `seed` on to the next multiple of REPLAYED_TOGETHER are replayed with it, their VAD windows
    scored together as the stream model scores them (bench.streaming.replayed)."""
    from ser_triton.serving.steps import segmentation as steps

    key = (str(workload.directory), seconds)
    done = _SEGMENTED.setdefault(key, {})
    if seed in done:
        return done[seed]
    seeds = range(seed, (seed // REPLAYED_TOGETHER + 1) * REPLAYED_TOGETHER)
    talks = [conversation(workload, seed=number, seconds=seconds) for number in seeds]
    found = [[] for _ in seeds]
    for row, events in enumerate(replayed([audio for audio, _, _ in talks], session)):
        spoken = talks[row][2]
        for at, event in events:
            spoke = speech_end(spoken, event.start, event.end) if isinstance(event, steps.Utterance) else None
            if spoke is not None:
                found[row].append((at / SAMPLE_RATE, event.end / SAMPLE_RATE, spoke / SAMPLE_RATE,
                                   (event.end - event.start) / SAMPLE_RATE))
    done.update(zip(seeds, found))
    return done[seed]


def delays(jobs, throughput_audio_s_per_s: float, floor: tuple[float, float], endpoint: str) -> np.ndarray:
    """Each job's delay at the ideal server (module docstring); jobs as `utterances` gives them, of all
    streams together (their clocks start together, as the stage's streams do)."""
    at = 0 if endpoint == "segmenter" else 1
    fixed, per_second, free, found = *floor, 0.0, []
    for job in sorted(jobs, key=lambda job: job[at]):
        begins = max(job[at], free)
        free = begins + job[3] / throughput_audio_s_per_s
        found.append(begins + fixed + per_second * job[3] - job[2])
    return np.asarray(found)


def measure(workload, seconds: float, throughput_audio_s_per_s: float, speech_share: float, floor_samples,
            allowed_p90_s: float) -> dict:
    """The ideal server's most streams for each endpoint, and its efficiency (as the stage's), searched
    one stream at a time up to a quarter past the throughput's streams."""
    from ser_triton.export.repository import vad_package_file
    from ser_triton.serving.steps.segmentation import vad_session

    floor = fit_floor(floor_samples)
    capacity = throughput_audio_s_per_s / speech_share
    session, jobs, found = vad_session(vad_package_file()), [], {}
    sustained = dict.fromkeys(ENDPOINTS, 0)
    p90 = {endpoint: {} for endpoint in ENDPOINTS}
    for streams in range(1, int(np.ceil(capacity * 1.25)) + 1):
        jobs += utterances(workload, streams - 1, seconds, session)
        for endpoint in ENDPOINTS:
            if sustained[endpoint] != streams - 1:
                continue
            value = round(float(np.percentile(delays(jobs, throughput_audio_s_per_s, floor, endpoint), 90)), 3)
            p90[endpoint][streams] = value
            if value <= allowed_p90_s:
                sustained[endpoint] = streams
        if all(value < streams for value in sustained.values()):
            break
    for endpoint in ENDPOINTS:
        found[endpoint] = {"max_streams": sustained[endpoint],
                           "efficiency": round(sustained[endpoint] / capacity, 3),
                           "p90_by_streams": {str(k): v for k, v in p90[endpoint].items()
                                              if k & (k - 1) == 0 or k >= sustained[endpoint]}}
    return {"description": __doc__.split("\n\n")[1].replace("\n", " "),
            "floor_fit_s": {"fixed": round(floor[0], 4), "per_audio_second": round(floor[1], 4)},
            **found}
