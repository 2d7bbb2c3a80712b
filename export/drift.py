"""How far a rewritten or reduced-precision network moves the answers, per network and along the
served chain, measured with the server's own code.

- network_drift: one network against its reference, on example inputs, each alone and inside a
  padded batch: max |difference| and min cosine of every float output over its valid part.
- run_chain / chain_drift: the ensemble's data path in one process, without Triton: the server's
  ONNX Runtime sessions and the `ctc_tokenize` step's decoder and tokenizer
  (serving.steps.text), one network in memory at a time.
"""

from pathlib import Path

import numpy as np

from export import specs
from export.onnx_export import cases_and_batch, run_network, run_onnx, valid_extent
from serving.steps.runtime import make_session
from serving.steps.text import TranscriptTokenizer


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def network_drift(reference: Path, candidate: Path, spec: specs.ModelSpec, cases: list[dict]) -> dict:
    """Per float output: max |difference| and min cosine over the valid part of each case, alone
    and as one padded batch (the candidate's batched rows against the reference alone). One
    session at a time: the reference's outputs are kept, not its session."""
    expected_all = run_network(reference, spec, cases)
    *got_all, batched = run_network(candidate, spec, cases_and_batch(spec, cases))
    report = {}
    for row, (case, expected, got) in enumerate(zip(cases, expected_all, got_all)):
        for output in spec.outputs:
            if output.dtype != "float32":
                continue
            extent = valid_extent(output, {**case, **expected}, 0)
            want = expected[output.name][0][:extent]
            entry = report.setdefault(output.name, {"max_abs_diff": 0.0, "min_cosine": 1.0})
            for value in (got[output.name][0][:extent], batched[output.name][row][:extent]):
                entry["max_abs_diff"] = max(entry["max_abs_diff"], float(np.abs(want - value).max()))
                entry["min_cosine"] = min(entry["min_cosine"], cosine(want, value))
    return report


def run_chain(files: dict[str, Path], assets: Path, all_specs: dict[str, specs.ModelSpec],
              audios: list[np.ndarray], threads: int = 0) -> tuple[np.ndarray, list[str]]:
    """(probabilities [n, labels], transcripts) of each utterance, as the ensemble computes them.

    files: network name -> ONNX file; assets: the folder of the ctc_tokenize step's files.
    """
    values = [{} for _ in audios]
    text = TranscriptTokenizer.from_directory(assets)
    for spec in all_specs.values():
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
            session = make_session(files[spec.name], threads)
            for value in values:
                value.update(run_onnx(session, spec, value))
            del session
    head, tokenize = all_specs[specs.FUSION_HEAD], all_specs[specs.CTC_TOKENIZE]
    probabilities = np.stack([value[head.output("probabilities").name][0] for value in values])
    return probabilities, [value[tokenize.output("transcript").name] for value in values]


def chain_drift(reference: dict[str, Path], candidate: dict[str, Path], assets: Path,
                all_specs: dict[str, specs.ModelSpec], audios: list[np.ndarray]) -> dict:
    """The served chain with reference networks against candidate networks, on the same audio:
    max |probability difference|, label agreement, transcript agreement."""
    p_ref, t_ref = run_chain(reference, assets, all_specs, audios)
    p_new, t_new = run_chain(candidate, assets, all_specs, audios)
    return {
        "utterances": len(audios),
        "max_abs_probability_diff": float(np.abs(p_ref - p_new).max()),
        "label_agreement": float(np.mean(p_ref.argmax(-1) == p_new.argmax(-1))),
        "transcript_agreement": float(np.mean([a == b for a, b in zip(t_ref, t_new)])),
    }
