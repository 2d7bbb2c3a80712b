"""ser-train's data checks and splits: by speaker, never by clip; every problem named before training."""

from pathlib import Path

import pytest

from ser_triton.core.contract import LABELS
from ser_triton.evaluation.datasets import DataError, Utterance, load_dataset, parse_label_map
from ser_triton.train.errors import TrainError
from ser_triton.train.session import TrainOptions, read_data
from ser_triton.train.splits import SplitOptions, make_splits
from tests import iemocap_tree, train_corpus


def corpus(speakers=("a", "b", "c", "d", "e", "f"), sessions=None, labels=LABELS, clips=2) -> list[Utterance]:
    return [Utterance(f"{s}-{label}-{i}", Path(f"{s}-{label}-{i}.wav"), label, speaker=s,
                      session=(sessions or {}).get(s))
            for s in speakers for label in labels for i in range(clips)]


def speakers_of(utterances) -> set[str]:
    return {u.speaker for u in utterances}


def test_test_speakers_validation_and_training_never_share_a_speaker():
    utterances = corpus()
    (split,) = make_splits(utterances, SplitOptions(test_speakers=("a", "b"), val_speakers=("c",)))
    assert speakers_of(split.test) == {"a", "b"} and speakers_of(split.validation) == {"c"}
    assert speakers_of(split.train) == {"d", "e", "f"}
    assert len(split.train) + len(split.validation) + len(split.test) == len(utterances)
    assert split.speaker_independent and split.describe()["speakers"]["test"] == ["a", "b"]


def test_validation_speakers_are_chosen_by_the_seed_and_said():
    utterances = corpus(speakers=tuple("abcdefghijkl"))
    splits = [make_splits(utterances, SplitOptions(test_speakers=("a",), seed=seed))[0] for seed in (0, 0, 1, 2, 3)]
    assert speakers_of(splits[0].validation) == speakers_of(splits[1].validation)
    assert len(speakers_of(splits[0].validation)) == 2, "20% of the 11 training speakers"
    assert "a" not in speakers_of(splits[0].validation) | speakers_of(splits[0].train)
    assert "chosen at random (seed 0)" in splits[0].how
    assert any(speakers_of(s.validation) != speakers_of(splits[0].validation) for s in splits[2:])


def test_sessions_choose_the_test_speakers():
    utterances = corpus(sessions={"a": "1", "b": "1", "c": "2", "d": "2", "e": "3", "f": "3"})
    (split,) = make_splits(utterances, SplitOptions(test_sessions=("3",)))
    assert speakers_of(split.test) == {"e", "f"}
    with pytest.raises(TrainError, match="session 7 is not in the data; its sessions: 1, 2, 3"):
        make_splits(utterances, SplitOptions(test_sessions=("7",)))
    shared = corpus(speakers=("a", "b", "c")) + [Utterance("x", Path("x.wav"), "sad", speaker="a", session="2")]
    for u in shared[:-1]:
        u.session = "1" if u.speaker == "a" else "2"
    with pytest.raises(TrainError, match="speaker a speaks in session 1 and in others"):
        make_splits(shared, SplitOptions(test_sessions=("1",)))


@pytest.mark.parametrize("folds", ["3", "sessions"])
def test_folds_test_every_speaker_exactly_once(folds):
    utterances = corpus(sessions={"a": "1", "b": "1", "c": "2", "d": "2", "e": "3", "f": "3"})
    splits = make_splits(utterances, SplitOptions(folds=folds))
    assert len(splits) == 3
    tested = [speakers_of(s.test) for s in splits]
    assert sorted(s for group in tested for s in group) == list("abcdef")
    for split in splits:
        assert not speakers_of(split.train) & speakers_of(split.test)
        assert not speakers_of(split.validation) & (speakers_of(split.test) | speakers_of(split.train))


def test_the_research_split_is_labelled_speaker_dependent():
    utterances = corpus(sessions={"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}, speakers=tuple("abcde"), clips=5)
    (split,) = make_splits(utterances, SplitOptions(research=True))
    assert speakers_of(split.test) == {"b"}, "Session 2 is the research test set"
    assert speakers_of(split.validation) <= speakers_of(split.train), "validation clips come from training speakers"
    assert not split.speaker_independent and "SPEAKER-DEPENDENT" in split.how
    assert split.describe()["speaker_independent"] is False
    assert len(split.validation) == round(0.2 * (len(utterances) - len(split.test)))


@pytest.mark.parametrize("options, utterances, message", [
    (SplitOptions(test_speakers=("zz",)), corpus(), r"--test-speakers: zz is not in the data; its speakers: a, b"),
    (SplitOptions(test_speakers=("a",)), corpus(speakers=("a",)), r"the data has 1 speaker \(a\)"),
    (SplitOptions(test_speakers=("a", "b")), corpus(speakers=("a", "b")), "leaves 0 speakers for training"),
    (SplitOptions(), corpus(), "say which speakers to test on"),
    (SplitOptions(test_speakers=("a",), val_speakers=("a",)), corpus(), "--val-speakers: a: test speakers"),
    (SplitOptions(test_speakers=("a",), folds="2"), corpus(), "--test-speakers and --folds each choose"),
    (SplitOptions(folds="9"), corpus(), r"--folds 9: between 2 and the number of speakers \(6\)"),
    (SplitOptions(test_sessions=("1",)), corpus(), "the data has no sessions"),
])
def test_bad_splits_are_named(options, utterances, message):
    with pytest.raises(TrainError, match=message):
        make_splits(utterances, options)


def test_a_class_missing_from_a_split_is_named_with_its_speakers():
    utterances = [u for u in corpus() if not (u.speaker in ("a", "b") and u.label == "angry")]
    with pytest.raises(TrainError, match=r"the test split \(a, b\) has no angry utterances"):
        make_splits(utterances, SplitOptions(test_speakers=("a", "b")))
    make_splits(utterances, SplitOptions(test_speakers=("c", "d")))  # positive control: angry is in every part


def test_utterances_without_a_speaker_are_named():
    utterances = corpus()
    utterances[3].speaker = None
    with pytest.raises(TrainError, match=r"utterances without a speaker \(1: a-sad-1.wav\)"):
        make_splits(utterances, SplitOptions(test_speakers=("a",)))


# Labels: --map, and labels without a mapping ---------------------------------------------------

def test_label_maps_parse_and_refuse_what_they_cannot_mean():
    assert parse_label_map(["Excited=happy", "calm, fearful=drop"]) == {
        "excited": "happy", "calm": "drop", "fearful": "drop"}
    for bad in ("excited", "=happy", "excited=joyful"):
        with pytest.raises(DataError, match="give LABEL=TARGET"):
            parse_label_map([bad])
    with pytest.raises(DataError, match="'calm' is mapped twice"):
        parse_label_map(["calm=neutral", "calm=drop"])


def test_an_unknown_label_stops_training_until_it_is_mapped(tmp_path):
    manifest = train_corpus.build(tmp_path, clips=1, labels=(*LABELS, "calm"), seconds=0.1)
    with pytest.raises(TrainError) as error:
        read_data(TrainOptions(data=manifest))
    message = str(error.value)
    assert "'calm': 5 rows (manifest.csv:6, manifest.csv:11, ...)" in message and "--map" in message
    mapped = read_data(TrainOptions(data=manifest, label_map=parse_label_map(["calm=neutral"])))
    assert sum(u.label == "neutral" for u in mapped.utterances) == 10
    assert {u.original_label for u in mapped.utterances if u.label == "neutral"} == {"neutral", "calm"}
    dropped = read_data(TrainOptions(data=manifest, label_map=parse_label_map(["calm=drop"])))
    assert len(dropped.utterances) == 20
    assert dropped.skipped_reasons() == {"label 'calm' left out (--map)": 5}
    assert all(row.by_design and row.label == "calm" for row in dropped.skipped)


def test_iemocap_categories_take_a_map_by_code_or_name(tmp_path):
    release = iemocap_tree.build(tmp_path / "iemocap")
    frustrated = "Ses01F_impro01_M000"
    assert frustrated not in {u.id for u in load_dataset(release).utterances}
    for spelling in ("fru", "frustration", "frustrated"):
        dataset = load_dataset(release, label_map=parse_label_map([f"{spelling}=angry"]))
        assert {u.id: u.label for u in dataset.utterances}[frustrated] == "angry"
    dropped = load_dataset(release, label_map=parse_label_map(["excited=drop"]))
    assert "Ses01F_impro01_F001" not in {u.id for u in dropped.utterances}
    assert any(s.source == "Ses01F_impro01_F001" and s.by_design for s in dropped.skipped)
