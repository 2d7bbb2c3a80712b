"""How far a rewritten or reduced-precision network moves the answers, per network and along the
served chain, measured with the server's own code.

- network_drift: one network against its reference on example inputs, each alone and inside a
  padded batch: max |difference| and min cosine of every float output over its valid part.
- run_chain: the ensemble's data path in one process, without Triton: the server's sessions
  (serving.steps.runtime) and the `ctc_tokenize` step's decoder and tokenizer
  (serving.steps.text), one network in memory at a time. Given the values of an earlier run, it
  recomputes only what a replaced network changes.
- chain_drift / output_cosine: a chain run against a reference run: label agreement, transcript
  CER, largest probability difference (evaluation.metrics.compare_systems, as ser-evaluate reports
  them), and each network's own outputs.
"""

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ser_triton.core.contract import LABELS
from ser_triton.evaluation.metrics import compare_systems, decisive_label_agreement
from ser_triton.core import specs
from ser_triton.export.onnx_export import (alone_and_in_batch, cases_and_batch, pad_batch, run_network, run_onnx,
                                           valid_extent)
from ser_triton.serving.steps.text import TranscriptTokenizer

LABEL_MARGIN = 0.1
"""An emotion decision is decisive when fp32's top probability leads the second by this much."""
FRAME_MARGIN = 2.0
"""A CTC frame is decisive when fp32's top logit leads the second by this much (e^2: 7x likelier)."""

SessionFactory = Callable[[], object]
"""Makes one network's session when the chain needs it (so that one is in memory at a time)."""


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def network_drift(reference: Path, candidate: Path, spec: specs.ModelSpec, cases: list[dict]) -> dict:
    """Per float output: max |difference| and min cosine over the valid part of each case, alone
    and as one padded batch (the candidate's batched rows against the reference alone). One
    session at a time: the reference's outputs are kept, not its session."""
    expected_all = run_network(reference, spec, cases)
    *got_all, batched = run_network(candidate, spec, cases_and_batch(spec, cases))
    got_alone = {output.name: [got[output.name][0] for got in got_all] for output in spec.outputs}
    report = {}
    for candidate_rows in (got_alone, batched):
        for output, want, value in alone_and_in_batch(spec, cases, expected_all, candidate_rows):
            if output.dtype != "float32":
                continue
            entry = report.setdefault(output.name, {"max_abs_diff": 0.0, "min_cosine": 1.0})
            entry["max_abs_diff"] = max(entry["max_abs_diff"], float(np.abs(want - value).max()))
            entry["min_cosine"] = min(entry["min_cosine"], cosine(want, value))
    return report


def run_chain(sessions: dict[str, SessionFactory], assets: Path, all_specs: dict[str, specs.ModelSpec],
              audios: list[np.ndarray] | None = None, cached: list[dict] | None = None,
              replaced: set[str] = frozenset()) -> list[dict]:
    """Every tensor of every utterance, as the ensemble computes it: one dict per utterance.

    From `audios`; or from `cached` (an earlier run's values) recomputing the `replaced` networks
    and every step downstream of a tensor they change."""
    if cached is None:
        values = [{} for _ in audios]
        changed = None  # everything is computed
    else:
        values = [dict(value) for value in cached]
        changed = set()
    text = TranscriptTokenizer.from_directory(assets)
    for spec in all_specs.values():
        if changed is not None and spec.name not in replaced and not changed & {t.name for t in spec.inputs}:
            continue
        if spec.name == specs.AUDIO_INPUT:
            for value, audio in zip(values, audios):
                value[spec.output("waveform").name] = np.asarray(audio, np.float32)[None]
                value[spec.output("length").name] = np.array([audio.size], np.int64)
        elif spec.name == specs.CTC_TOKENIZE:
            for value in values:
                transcripts = text.transcribe(value[spec.input("logits").name], value[spec.input("length").name])
                ids, mask = text.tokenize(transcripts)
                value.update({spec.output("transcript").name: transcripts[0], spec.output("ids").name: ids,
                              spec.output("mask").name: mask})
        elif spec.name in specs.ONNX_NETWORKS:
            session = sessions[spec.name]()
            for value in values:
                value.update(run_onnx(session, spec, value))
            del session
        else:
            continue
        if changed is not None:
            changed |= {t.name for t in spec.outputs}
    return values


def records(values: list[dict], all_specs: dict[str, specs.ModelSpec]) -> list[dict]:
    """The chain's answers per utterance, as evaluation.metrics takes them."""
    head, tokenize = all_specs[specs.FUSION_HEAD], all_specs[specs.CTC_TOKENIZE]
    found = []
    for index, value in enumerate(values):
        probabilities = value[head.output("probabilities").name][0]
        found.append({"id": index, "predicted_label": LABELS[int(np.argmax(probabilities))],
                      "probabilities": dict(zip(LABELS, map(float, probabilities))),
                      "transcript": value[tokenize.output("transcript").name]})
    return found


def output_cosine(reference: list[dict], candidate: list[dict], spec: specs.ModelSpec) -> float:
    """The smallest cosine between the network's float outputs in two runs, per utterance, over
    the valid part."""
    worst = 1.0
    for want, got in zip(reference, candidate):
        for output in spec.outputs:
            if output.dtype == "float32":
                extent = valid_extent(output, want, 0)
                worst = min(worst, cosine(want[output.name][0][:extent], got[output.name][0][:extent]))
    return worst


def decisive_frame_agreement(reference: list[dict], candidate: list[dict], asr: specs.ModelSpec) -> tuple[float | None, int]:
    """(share of agreeing CTC frames, how many) over the frames where the reference's top logit
    leads by FRAME_MARGIN; None where there is none."""
    logits, frames = asr.output("logits").name, asr.output("length").name
    agree = decisive = 0
    for want, got in zip(reference, candidate):
        count = int(want[frames][0])
        if int(got[frames][0]) != count:
            continue
        a, b = want[logits][0][:count], got[logits][0][:count]
        top_two = np.sort(a, axis=-1)[:, -2:]
        mask = top_two[:, 1] - top_two[:, 0] >= FRAME_MARGIN
        decisive += int(mask.sum())
        agree += int((a.argmax(-1) == b.argmax(-1))[mask].sum())
    return (agree / decisive if decisive else None), decisive


def answer_drift(reference: list[dict], candidate: list[dict]) -> dict:
    """Two systems' answers to the same utterances (records as evaluation.metrics takes them): label
    agreement (overall and where the reference was decisive), transcript CER and agreement, and
    the largest probability difference."""
    comparison = compare_systems(reference, candidate, resamples=0)
    keys = ("label_agreement", "transcript_cer", "transcript_agreement", "max_probability_diff")
    labels, decisive = decisive_label_agreement(reference, candidate, LABEL_MARGIN)
    return {"utterances": comparison["n_utterances"], **{key: comparison[key] for key in keys},
            "decisive_label_agreement": labels, "decisive_utterances": decisive}


def chain_drift(reference: list[dict], candidate: list[dict], all_specs: dict[str, specs.ModelSpec]) -> dict:
    """A chain run against a reference run of the same utterances: answer_drift, and the
    agreement of decisive CTC frames."""
    frames, decisive_frames = decisive_frame_agreement(reference, candidate, all_specs[specs.ASR])
    return {**answer_drift(records(reference, all_specs), records(candidate, all_specs)),
            "decisive_frame_agreement": frames, "decisive_frames": decisive_frames}


def batch_dependence(session, spec: specs.ModelSpec, feeds: list[dict]) -> float:
    """max |batched - alone| of a network's float outputs: what a padded batch changes (0 for
    fp32; dynamic int8 takes activation scales from the whole batch)."""
    alone = [run_onnx(session, spec, feed) for feed in feeds]
    batched = run_onnx(session, spec, pad_batch(spec, feeds))
    worst = 0.0
    for output, value, in_batch in alone_and_in_batch(spec, feeds, alone, batched):
        if output.dtype == "float32":
            worst = max(worst, float(np.abs(value - in_batch).max()))
    return worst


def time_network(session, spec: specs.ModelSpec, feeds: list[dict], repeats: int = 3) -> float:
    """Seconds to run each feed once (the best of `repeats`), summed over the feeds."""
    total = 0.0
    for feed in feeds:
        inputs = {t.name: feed[t.name] for t in spec.inputs}
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, inputs)
            best = min(best, time.perf_counter() - started)
        total += best
    return total
