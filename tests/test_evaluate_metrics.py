"""ser-evaluate's metrics against hand-computed values, scikit-learn and jiwer."""

import jiwer
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from ser_triton.core.contract import LABELS
from ser_triton.evaluation.metrics import (
    classification_scores,
    compare_systems,
    edit_counts,
    normalise_transcript,
    transcript_scores,
)

HAPPY, SAD, ANGRY, NEUTRAL = LABELS
# sad is never predicted; neutral never occurs in the gold labels but is predicted once
GOLD = [HAPPY, HAPPY, HAPPY, SAD, SAD, ANGRY, ANGRY, ANGRY, ANGRY]
PREDICTED = [HAPPY, HAPPY, ANGRY, HAPPY, ANGRY, ANGRY, ANGRY, NEUTRAL, HAPPY]


def test_scores_by_hand_with_an_unpredicted_class_and_a_class_without_support():
    scores = classification_scores(GOLD, PREDICTED, resamples=50)
    assert scores["confusion"]["counts"] == [[2, 0, 1, 0], [1, 0, 1, 0], [1, 0, 2, 1], [0, 0, 0, 0]]
    assert scores["confusion"]["normalized"][0] == pytest.approx([2 / 3, 0, 1 / 3, 0])
    assert scores["confusion"]["normalized"][3] == [None] * 4
    assert scores["wa"] == pytest.approx(4 / 9)
    assert scores["ua"] == pytest.approx((2 / 3 + 0 + 2 / 4) / 3)  # neutral has no support: not averaged
    per_class = scores["per_class"]
    assert per_class[HAPPY] == pytest.approx({"precision": 2 / 4, "recall": 2 / 3, "f1": 4 / 7, "support": 3,
                                              "predicted": 4})
    assert per_class[SAD] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 2, "predicted": 0}
    assert per_class[ANGRY] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 4,
                                              "predicted": 4})
    assert per_class[NEUTRAL] == {"precision": 0.0, "recall": None, "f1": 0.0, "support": 0, "predicted": 1}
    assert scores["macro_f1"] == pytest.approx((4 / 7 + 0 + 0.5 + 0) / 4)


def as_number(value):
    return np.nan if value is None else value


@pytest.mark.parametrize("gold, predicted", [
    (GOLD, PREDICTED),
    *[(list(np.random.default_rng(seed).choice(LABELS, n, p=[0.4, 0.3, 0.3, 0.0])),
       list(np.random.default_rng(seed + 100).choice(LABELS, n, p=[0.2, 0.0, 0.3, 0.5])))
      for seed, n in ((1, 7), (2, 60), (3, 500))],
])
def test_scores_equal_scikit_learn(gold, predicted):
    scores = classification_scores(gold, predicted, resamples=20)
    assert scores["confusion"]["counts"] == confusion_matrix(gold, predicted, labels=LABELS).tolist()
    assert scores["wa"] == pytest.approx(np.mean(np.array(gold) == np.array(predicted)))
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        assert scores["ua"] == pytest.approx(balanced_accuracy_score(gold, predicted))
    assert scores["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=np.nan))
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=LABELS,
                                                                     zero_division=np.nan)
    for k, label in enumerate(LABELS):
        ours = scores["per_class"][label]
        np.testing.assert_allclose([as_number(ours[key]) for key in ("precision", "recall", "f1")],
                                   [precision[k], recall[k], f1[k]], equal_nan=True)
        assert ours["support"] == support[k]


def test_bootstrap_interval_contains_the_estimate_is_seeded_and_has_the_binomial_width():
    rng = np.random.default_rng(7)
    gold = list(rng.choice(LABELS, 400))
    predicted = [g if rng.random() < 0.7 else rng.choice(LABELS) for g in gold]
    first = classification_scores(gold, predicted, resamples=1000, seed=3)
    for key in ("wa", "ua"):
        low, high = first[f"{key}_ci95"]
        assert low < first[key] < high
    assert classification_scores(gold, predicted, resamples=1000, seed=3) == first
    assert classification_scores(gold, predicted, resamples=1000, seed=4)["wa_ci95"] != first["wa_ci95"]
    # WA is a proportion: the bootstrap interval must be close to the normal one, 2 x 1.96 x sqrt(p(1-p)/n)
    p = first["wa"]
    expected_width = 2 * 1.96 * np.sqrt(p * (1 - p) / len(gold))
    low, high = first["wa_ci95"]
    assert high - low == pytest.approx(expected_width, rel=0.15)


@pytest.mark.parametrize("reference, hypothesis, words, edits", [
    ("Hello, World!", "HELLO WORLD", 2, 0),
    ("[LAUGHTER] I know. [BREATHING]", "I KNOW", 2, 0),
    ("I- I don't know", "I I DON'T KNOW", 4, 0),
    ("Don't you dare.", "DONT YOU DARE", 3, 0),
    ("the cat sat", "THE CAT SAT DOWN", 3, 1),
    ("the cat sat", "THE BAT", 3, 2),
    ("okay", "OKAY<unk> </s>", 1, 0),
    ("[LAUGHTER]", "HA HA", 0, 2),
    ("so what", "", 2, 2),
])
def test_word_errors_after_asr_normalisation(reference, hypothesis, words, edits):
    assert edit_counts(reference, hypothesis, "word") == (edits, words)


def test_normalisation():
    assert normalise_transcript("  Well-known [GARBAGE] facts,   Sir!  ") == "well known facts sir"
    assert normalise_transcript("[LAUGHTER]") == ""


def test_corpus_wer_and_cer_equal_jiwer_on_normalised_text():
    references = ["Hello, World!", "I- I don't know.", None, "the cat sat on the mat"]
    hypotheses = ["HELLO WORD", "I DONT NO", "ANYTHING", "THE CAT SAT ON MAT"]
    scores = transcript_scores(references, hypotheses, resamples=200)
    kept = [0, 1, 3]
    normal_references = [normalise_transcript(references[i]) for i in kept]
    normal_hypotheses = [normalise_transcript(hypotheses[i]) for i in kept]
    assert scores["n_with_reference_transcript"] == 3
    assert scores["wer"] == pytest.approx(jiwer.wer(normal_references, normal_hypotheses))
    assert scores["wer"] == pytest.approx((1 + 2 + 1) / (2 + 4 + 6))
    assert scores["cer"] == pytest.approx(jiwer.cer(normal_references, normal_hypotheses))
    low, high = scores["wer_ci95"]
    assert low <= scores["wer"] <= high
    assert transcript_scores([None, None], ["A", "B"])["wer"] is None


def records(labels, transcripts, probabilities, gold=None, references=None):
    return [{"id": str(i), "predicted_label": label, "transcript": transcript,
             "probabilities": dict(zip(LABELS, p)),
             **({"gold_label": gold[i]} if gold else {}),
             **({"reference_transcript": references[i]} if references else {})}
            for i, (label, transcript, p) in enumerate(zip(labels, transcripts, probabilities))]


def test_compare_systems_by_hand():
    gold = [HAPPY, SAD, ANGRY, NEUTRAL]
    references = ["it is fine", "go away", "stop it", "okay"]
    first = records([HAPPY, SAD, ANGRY, HAPPY], ["IT IS FINE", "GO AWAY", "STOP IT", "OK"],
                    [[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.1, 0.1, 0.7, 0.1], [0.4, 0.1, 0.1, 0.4]],
                    gold, references)
    second = records([HAPPY, SAD, ANGRY, NEUTRAL], ["IT IS FINE", "GO AWAY", "STOP IT", "OKAY"],
                     [[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.1, 0.1, 0.7, 0.1], [0.35, 0.1, 0.1, 0.45]],
                     gold, references)
    comparison = compare_systems(first, second, resamples=500)
    assert comparison["n_utterances"] == 4
    assert comparison["label_agreement"] == 0.75
    assert comparison["transcript_agreement"] == 0.75
    assert comparison["transcript_cer"] == pytest.approx(2 / len("it is fine" + "go away" + "stop it" + "ok"))
    assert comparison["max_probability_diff"] == pytest.approx(0.05)
    assert comparison["delta"]["wa"]["value"] == pytest.approx(1.0 - 0.75)
    assert comparison["delta"]["ua"]["value"] == pytest.approx(1.0 - 0.75)
    assert comparison["delta"]["wer"]["value"] == pytest.approx(0 - 1 / 8)
    for key in ("wa", "ua", "wer"):
        low, high = comparison["delta"][key]["ci95"]
        assert low <= comparison["delta"][key]["value"] <= high


def test_compare_a_system_with_itself_and_without_gold_data():
    plain = records([HAPPY, SAD], ["A B", "C"], [[0.5, 0.2, 0.2, 0.1], [0.1, 0.7, 0.1, 0.1]])
    comparison = compare_systems(plain, plain)
    assert (comparison["label_agreement"], comparison["transcript_cer"], comparison["max_probability_diff"]) == (1, 0, 0)
    assert comparison["delta"] == {}, "no gold labels or reference transcripts: no accuracy or WER deltas"


def test_compare_refuses_different_utterances():
    plain = records([HAPPY, SAD], ["A", "B"], [[1, 0, 0, 0], [0, 1, 0, 0]])
    with pytest.raises(ValueError, match="same utterances"):
        compare_systems(plain, plain[:1])
    with pytest.raises(ValueError, match="same order"):
        compare_systems(plain, plain[::-1])


def test_one_prediction_record_for_ser_evaluate_and_the_bench():
    """evaluation.systems.prediction_record: with the labelled utterance, a line of predictions.jsonl;
    without it (the bench's answers), the record compare_systems matches by the result's file."""
    from pathlib import Path

    from ser_triton.core.result import Result
    from ser_triton.evaluation.datasets import Utterance
    from ser_triton.evaluation.systems import prediction_record

    probabilities = dict(zip(LABELS, (0.1, 0.6, 0.2, 0.1)))
    result = Result("clips/a.wav", SAD, probabilities, "GO AWAY", duration=1.5, latency=0.2)
    utterance = Utterance("a", Path("clips/a.wav"), SAD, "go away", speaker="M01", session="1", channel=2)
    assert list(prediction_record(result, utterance).items()) == [
        ("id", "a"), ("file", "clips/a.wav"), ("gold_label", SAD), ("predicted_label", SAD),
        ("probabilities", probabilities), ("transcript", "GO AWAY"), ("reference_transcript", "go away"),
        ("speaker", "M01"), ("session", "1"), ("channel", 2), ("duration", 1.5)]
    assert list(prediction_record(result).items()) == [
        ("id", "clips/a.wav"), ("predicted_label", SAD), ("probabilities", probabilities), ("transcript", "GO AWAY")]
    assert compare_systems([prediction_record(result)], [prediction_record(result)], resamples=0)["label_agreement"] == 1
