"""How good per-utterance predictions are: WA, UA, F1, confusion, WER/CER, bootstrap intervals.

Everything here takes plain per-utterance records, the lines of predictions.jsonl:

    predicted_label        the system's label, one of core.contract.LABELS
    probabilities          {label: probability}
    transcript             the system's transcript
    gold_label             the data's label (optional: without it, no accuracy)
    reference_transcript   the data's transcript (optional: without it, no WER/CER)

so anything that has two systems' outputs on the same utterances (ser-evaluate --compare,
the benchmark's int8 drift) measures them with `compare_systems`.

WA is accuracy over utterances; UA the mean of per-class recalls over the classes that occur
in the gold labels (the speech-emotion field's "unweighted accuracy"); macro-F1 the mean F1 over
the classes that occur in gold or predicted labels. A per-class value without a denominator
(precision of a class never predicted, recall of a class with no support) is None, not 0.
Confidence intervals are percentile bootstraps over utterances; comparisons resample both
systems with the same utterances (paired).

In evaluation, the floor below export, because ser-evaluate, the export's drift gates (CER, label
agreement), the benchmark and training all score answers with it. It needs jiwer, which the export
and evaluate extras bring; the thin client (core and client, no jiwer) never imports it.
"""

from collections.abc import Callable, Sequence

import jiwer
import numpy as np

from ser_triton.core.contract import LABELS

CONFIDENCE = 0.95
RESAMPLES = 1000
_BLOCK = 100  # resamples drawn at a time, so memory stays at 100 x utterances

_NORMALISE = jiwer.Compose([
    jiwer.RemoveKaldiNonWords(),  # [LAUGHTER], [BREATHING], <unk>, </s>
    jiwer.ToLowerCase(),
    jiwer.SubstituteRegexes({r"-": " "}),  # "I- I" and "well-known" split like speech
    jiwer.RemovePunctuation(),
    jiwer.RemoveMultipleSpaces(),
    jiwer.Strip(),
])


def normalise_transcript(text: str) -> str:
    """Lower case, no punctuation, no bracketed non-speech tokens, single spaces: how ASR is scored."""
    return _NORMALISE(text)


def edit_counts(reference: str, hypothesis: str, unit: str = "word") -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference length) in words or characters, normalised.

    An empty reference has length 0 and counts every hypothesis token as an insertion.
    """
    reference, hypothesis = normalise_transcript(reference), normalise_transcript(hypothesis)
    tokens = str.split if unit == "word" else list
    length, inserted = len(tokens(reference)), len(tokens(hypothesis))
    if length == 0 or inserted == 0:
        return max(length, inserted), length
    measured = (jiwer.process_words if unit == "word" else jiwer.process_characters)(reference, hypothesis)
    return measured.substitutions + measured.deletions + measured.insertions, length


def _error_arrays(references: Sequence[str], hypotheses: Sequence[str], unit: str) -> tuple[np.ndarray, np.ndarray]:
    counts = np.array([edit_counts(r, h, unit) for r, h in zip(references, hypotheses)], dtype=np.int64)
    counts = counts.reshape(-1, 2)
    return counts[:, 0], counts[:, 1]


def _ratio(numerator, denominator):
    """numerator / denominator elementwise, NaN where the denominator is 0."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.full(np.broadcast(numerator, denominator).shape, np.nan),
                     where=denominator > 0)


def _number(value) -> float | None:
    """A JSON-ready float; None for an undefined (NaN) value."""
    value = float(value)
    return None if np.isnan(value) else value


def bootstrap(statistic: Callable[[np.ndarray], np.ndarray], n: int, resamples: int = RESAMPLES,
              seed: int = 0) -> np.ndarray:
    """statistic(indices [b, n]) -> [b, ...] over `resamples` draws of n utterances with replacement."""
    rng = np.random.default_rng(seed)
    blocks = []
    for start in range(0, resamples, _BLOCK):
        blocks.append(statistic(rng.integers(0, n, size=(min(_BLOCK, resamples - start), n))))
    return np.concatenate(blocks)


def interval(samples: np.ndarray) -> list[float | None]:
    """The central CONFIDENCE interval of bootstrap samples (first axis)."""
    tail = (1 - CONFIDENCE) / 2 * 100
    if np.isnan(samples).all():
        return [None, None]
    low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
    return [_number(low), _number(high)]


# Classification --------------------------------------------------------------------------------

def label_indices(labels: Sequence[str]) -> np.ndarray:
    return np.array([LABELS.index(label) for label in labels], dtype=np.int64).reshape(-1)


def confusion_matrix(gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Counts [gold, predicted] in LABELS order."""
    k = len(LABELS)
    return np.bincount(gold * k + predicted, minlength=k * k).reshape(k, k)


def _confusions(gold: np.ndarray, predicted: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """One confusion matrix per row of `indices`: [b, k, k]."""
    k, b = len(LABELS), len(indices)
    codes = gold[indices] * k + predicted[indices] + (np.arange(b) * k * k)[:, None]
    return np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k)


def accuracies(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(WA, UA) of confusion matrices [..., k, k]."""
    correct = np.diagonal(confusion, axis1=-2, axis2=-1)
    support = confusion.sum(-1)
    wa = _ratio(correct.sum(-1), support.sum(-1))
    recalls = _ratio(correct, support)
    counted = (~np.isnan(recalls)).sum(-1)
    ua = _ratio(np.nansum(recalls, -1), counted)
    return wa, ua


def per_class_scores(confusion: np.ndarray) -> dict[str, dict]:
    scores = {}
    for k, label in enumerate(LABELS):
        hits, support, predicted = confusion[k, k], confusion[k].sum(), confusion[:, k].sum()
        scores[label] = {
            "precision": _number(_ratio(hits, predicted)),
            "recall": _number(_ratio(hits, support)),
            "f1": _number(_ratio(2 * hits, support + predicted)),
            "support": int(support),
            "predicted": int(predicted),
        }
    return scores


def classification_scores(gold_labels: Sequence[str], predicted_labels: Sequence[str],
                          resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """wa, ua (with 95% bootstrap intervals), macro_f1, per_class and confusion for one system."""
    gold, predicted = label_indices(gold_labels), label_indices(predicted_labels)
    if gold.size == 0:
        raise ValueError("no utterances to score")
    confusion = confusion_matrix(gold, predicted)
    wa, ua = accuracies(confusion)
    per_class = per_class_scores(confusion)
    f1s = [scores["f1"] for scores in per_class.values() if scores["f1"] is not None]
    samples = bootstrap(lambda idx: np.stack(accuracies(_confusions(gold, predicted, idx)), -1),
                        gold.size, resamples, seed)
    support = confusion.sum(1, keepdims=True)
    return {
        "wa": _number(wa), "wa_ci95": interval(samples[:, 0]),
        "ua": _number(ua), "ua_ci95": interval(samples[:, 1]),
        "macro_f1": float(np.mean(f1s)),
        "per_class": per_class,
        "confusion": {
            "rows": "gold label", "columns": "predicted label", "labels": list(LABELS),
            "counts": confusion.tolist(),
            "normalized": [[_number(v) for v in row] for row in _ratio(confusion, support)],
        },
    }


# Transcripts -----------------------------------------------------------------------------------

def transcript_scores(references: Sequence[str | None], hypotheses: Sequence[str],
                      resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Corpus WER and CER (total edits / total reference length) over the utterances with a reference."""
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r is not None]
    if not pairs:
        return {"wer": None, "wer_ci95": [None, None], "cer": None, "n_with_reference_transcript": 0}
    references, hypotheses = zip(*pairs)
    word_edits, words = _error_arrays(references, hypotheses, "word")
    char_edits, chars = _error_arrays(references, hypotheses, "char")
    samples = bootstrap(lambda idx: _ratio(word_edits[idx].sum(1), words[idx].sum(1)), len(pairs), resamples, seed)
    return {
        "wer": _number(_ratio(word_edits.sum(), words.sum())), "wer_ci95": interval(samples),
        "cer": _number(_ratio(char_edits.sum(), chars.sum())),
        "n_with_reference_transcript": len(pairs),
    }


# Records ---------------------------------------------------------------------------------------

def has_gold_labels(records: Sequence[dict]) -> bool:
    return bool(records) and all(r.get("gold_label") is not None for r in records)


def score_records(records: Sequence[dict], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """One system's scores on its records: classification (where gold labels exist) and transcripts."""
    scores = {"n_utterances": len(records)}
    if has_gold_labels(records):
        scores.update(classification_scores([r["gold_label"] for r in records],
                                            [r["predicted_label"] for r in records], resamples, seed))
    scores.update(transcript_scores([r.get("reference_transcript") for r in records],
                                    [r["transcript"] for r in records], resamples, seed))
    return scores


def _probability_matrix(records: Sequence[dict]) -> np.ndarray:
    return np.array([[r["probabilities"][label] for label in LABELS] for r in records], dtype=np.float64)


def decisive_label_agreement(first: Sequence[dict], second: Sequence[dict], margin: float) -> tuple[float | None, int]:
    """(share of agreeing labels, how many) over the utterances where `first` was decisive: its top
    probability at least `margin` above the second. A near-tie flips under any perturbation, so
    agreement there says nothing; None where no utterance is decisive."""
    p_first, p_second = _probability_matrix(first), _probability_matrix(second)
    top_two = np.sort(p_first, axis=1)[:, -2:]
    decisive = top_two[:, 1] - top_two[:, 0] >= margin
    if not decisive.any():
        return None, 0
    agree = p_first.argmax(1) == p_second.argmax(1)
    return float(agree[decisive].mean()), int(decisive.sum())


def _delta(first: np.ndarray, second: np.ndarray, samples: np.ndarray) -> dict:
    return {"value": _number(second - first), "ci95": interval(samples)}


def compare_systems(first: Sequence[dict], second: Sequence[dict], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """How far `second` is from `first` on the same utterances (same order).

    label_agreement: share of utterances with the same predicted label; transcript_agreement:
    share with the same normalised transcript; transcript_cer: CER of second's transcripts
    against first's; max_probability_diff: largest |p_first - p_second| over utterances and
    labels. With gold labels (and reference transcripts), `delta` holds second minus first for
    WA, UA (and WER), each with a paired-bootstrap 95% interval.
    """
    if len(first) != len(second) or not first:
        raise ValueError(f"compare_systems needs the same utterances from both: got {len(first)} and {len(second)}")
    mismatched = [(a.get("id"), b.get("id")) for a, b in zip(first, second) if a.get("id") != b.get("id")]
    if mismatched:
        raise ValueError(f"compare_systems needs the same utterances in the same order: {mismatched[0]} differ")
    n = len(first)
    char_edits, chars = _error_arrays([r["transcript"] for r in first], [r["transcript"] for r in second], "char")
    pairs = list(zip(first, second))
    comparison = {
        "n_utterances": n,
        "label_agreement": float(np.mean([a["predicted_label"] == b["predicted_label"] for a, b in pairs])),
        "transcript_agreement": float(np.mean([normalise_transcript(a["transcript"])
                                               == normalise_transcript(b["transcript"]) for a, b in pairs])),
        "transcript_cer": 0.0 if char_edits.sum() == 0 else _number(_ratio(char_edits.sum(), chars.sum())),
        "max_probability_diff": float(np.abs(_probability_matrix(first) - _probability_matrix(second)).max()),
        "delta": {},
    }
    if has_gold_labels(first) and has_gold_labels(second):
        gold = label_indices([r["gold_label"] for r in first])
        predictions = [label_indices([r["predicted_label"] for r in records]) for records in (first, second)]
        points = [accuracies(confusion_matrix(gold, p)) for p in predictions]

        def accuracy_deltas(idx):
            (wa_a, ua_a), (wa_b, ua_b) = (accuracies(_confusions(gold, p, idx)) for p in predictions)
            return np.stack([wa_b - wa_a, ua_b - ua_a], -1)

        samples = bootstrap(accuracy_deltas, n, resamples, seed)
        comparison["delta"]["wa"] = _delta(points[0][0], points[1][0], samples[:, 0])
        comparison["delta"]["ua"] = _delta(points[0][1], points[1][1], samples[:, 1])
    with_reference = [i for i, r in enumerate(first) if r.get("reference_transcript") is not None]
    if with_reference:
        references = [first[i]["reference_transcript"] for i in with_reference]
        first_edits, words = _error_arrays(references, [first[i]["transcript"] for i in with_reference], "word")
        second_edits, _ = _error_arrays(references, [second[i]["transcript"] for i in with_reference], "word")
        edits = (first_edits, second_edits)

        def wer_deltas(idx):
            return _ratio(edits[1][idx].sum(1), words[idx].sum(1)) - _ratio(edits[0][idx].sum(1), words[idx].sum(1))

        samples = bootstrap(wer_deltas, len(with_reference), resamples, seed)
        comparison["delta"]["wer"] = _delta(_ratio(edits[0].sum(), words.sum()), _ratio(edits[1].sum(), words.sum()),
                                            samples)
    return comparison
