"""The data readers of ser-evaluate: manifests (CSV, TSV, JSON lines) and the IEMOCAP release layout."""

import json
import shutil
from pathlib import Path

import pytest

from ser_triton import samples
from ser_triton.core.contract import LABELS
from ser_triton.evaluation.datasets import DataError, load_dataset, normalise_label
from tests import iemocap_tree

SENTENCE = samples.sentences()[0]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return iemocap_tree.build(tmp_path_factory.mktemp("iemocap"))


# IEMOCAP ---------------------------------------------------------------------------------------

def test_iemocap_four_class_mapping_transcripts_and_ids(release):
    dataset = load_dataset(release)
    assert dataset.kind == "iemocap" and dataset.name == "IEMOCAP_full_release"
    assert {u.id: u.label for u in dataset.utterances} == iemocap_tree.EXPECTED_LABELS
    by_id = {u.id: u for u in dataset.utterances}
    assert by_id["Ses01F_impro01_F000"].text == "Excuse me."
    assert by_id["Ses01F_impro01_F001"].text == "Yeah, I- I finally got them!"
    assert by_id["Ses01F_impro01_M002"].text == "[LAUGHTER]"
    assert by_id["Ses03M_script02_2_M011"].text is None
    assert by_id["Ses03M_impro05a_F000"].path == (
        release / "Session3" / "sentences" / "wav" / "Ses03M_impro05a" / "Ses03M_impro05a_F000.wav")
    assert (by_id["Ses01F_impro01_M002"].speaker, by_id["Ses01F_impro01_M002"].session) == ("Ses01M", "1")
    assert by_id["Ses03M_script02_2_F000"].speaker == "Ses03F"
    assert not any("MXX" in u.id for u in dataset.utterances), "non-speech turns have no label"


def test_iemocap_rows_left_out_are_counted_with_their_reason(release):
    dataset = load_dataset(release)
    skipped = {s.source: s for s in dataset.skipped}
    assert set(skipped) == {"Ses01F_impro01_M000", "Ses01F_impro01_F002", "Ses03M_impro05a_M000",
                            "Ses01F_impro01_M001"}
    assert "fru" in skipped["Ses01F_impro01_M000"].reason and skipped["Ses01F_impro01_M000"].by_design
    assert "xxx" in skipped["Ses01F_impro01_F002"].reason
    assert "sur" in skipped["Ses03M_impro05a_M000"].reason
    missing = skipped["Ses01F_impro01_M001"]
    assert missing.reason == "missing audio file" and not missing.by_design
    assert missing.detail.endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001.wav")
    assert sum(dataset.skipped_reasons().values()) == 4
    assert dataset.skipped_reasons()["missing audio file"] == 1


@pytest.mark.parametrize("sessions", [["3"], ["Session3"], ["03"]])
def test_iemocap_sessions_pick_the_fold(release, sessions):
    dataset = load_dataset(release, sessions=sessions)
    assert {u.id for u in dataset.utterances} == {
        "Ses03M_impro05a_F000", "Ses03M_script02_2_F000", "Ses03M_script02_2_M011"}
    assert {s.source for s in dataset.skipped} == {"Ses03M_impro05a_M000"}
    assert dataset.name == "IEMOCAP_full_release-session3"


def test_iemocap_excited_can_be_left_out(release):
    dataset = load_dataset(release, excited="drop")
    assert "Ses01F_impro01_F001" not in {u.id for u in dataset.utterances}
    assert any(s.source == "Ses01F_impro01_F001" and "exc" in s.reason for s in dataset.skipped)
    assert "Ses03M_impro05a_F000" in {u.id for u in dataset.utterances}, "hap stays happy"


def test_iemocap_folder_errors_name_the_problem(release, tmp_path):
    with pytest.raises(DataError, match=r"--sessions 6: .* has sessions 1, 3"):
        load_dataset(release, sessions=["6"])
    with pytest.raises(DataError, match="without Session1..Session5"):
        load_dataset(tmp_path)
    (tmp_path / "Session2").mkdir()
    with pytest.raises(DataError, match="EmoEvaluation: missing"):
        load_dataset(tmp_path)


# Manifests -------------------------------------------------------------------------------------

ROWS = [
    {"path": "audio/a.flac", "label": "Neutral", "text": "hello there", "speaker": "s1", "session": "1"},
    {"path": "audio/b.flac", "label": "exc", "text": "", "speaker": "s2", "session": "2"},
    {"path": "audio/a.flac", "label": "ANG", "speaker": "s1", "session": "2"},
    {"path": "audio/missing.flac", "label": "sad", "speaker": "s1", "session": "1"},
    {"path": "audio/b.flac", "label": "fear", "speaker": "s1", "session": "1"},
]


@pytest.fixture
def audio_folder(tmp_path) -> Path:
    (tmp_path / "audio").mkdir()
    for name in ("a.flac", "b.flac"):
        shutil.copy(SENTENCE, tmp_path / "audio" / name)
    return tmp_path


def write_manifest(folder: Path, suffix: str, rows=ROWS, extra_lines=()) -> Path:
    path = folder / f"test{suffix}"
    if suffix == ".jsonl":
        lines = [json.dumps(row) for row in rows]
    else:
        separator = "," if suffix == ".csv" else "\t"
        columns = ["path", "label", "text", "speaker", "session"]
        lines = [separator.join(columns)] + [separator.join(row.get(c, "") for c in columns) for row in rows]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_manifest_rows_labels_and_relative_paths(audio_folder, suffix):
    dataset = load_dataset(write_manifest(audio_folder, suffix))
    assert dataset.kind == "manifest" and dataset.name == "test"
    assert [(u.path, u.label, u.text, u.speaker) for u in dataset.utterances] == [
        (audio_folder / "audio" / "a.flac", "neutral", "hello there", "s1"),
        (audio_folder / "audio" / "b.flac", "happy", None, "s2"),
        (audio_folder / "audio" / "a.flac", "angry", None, "s1"),
    ]
    reasons = {s.source: (s.reason, s.detail) for s in dataset.skipped}
    assert reasons[f"test{suffix}:{5 if suffix != '.jsonl' else 4}"][0] == "missing audio file"
    unknown = reasons[f"test{suffix}:{6 if suffix != '.jsonl' else 5}"]
    assert unknown[0] == "unknown label" and "'fear'" in unknown[1]


def test_manifest_sessions_filter_rows(audio_folder):
    dataset = load_dataset(write_manifest(audio_folder, ".csv"), sessions=["2"])
    assert [u.label for u in dataset.utterances] == ["happy", "angry"]
    assert dataset.skipped == [] and dataset.name == "test-session2"
    no_column = audio_folder / "plain.csv"
    no_column.write_text("path,label\naudio/a.flac,sad\n")
    with pytest.raises(DataError, match="session column"):
        load_dataset(no_column, sessions=["1"])


def test_malformed_rows_are_skipped_with_their_line(audio_folder):
    csv = write_manifest(audio_folder, ".csv", ROWS[:1], ["audio/a.flac,sad,too,many,fields,here", "audio/a.flac",
                                                         ",sad,,,", "audio/b.flac,,,,"])
    dataset = load_dataset(csv)
    assert len(dataset.utterances) == 1
    assert [(s.source, s.reason) for s in dataset.skipped] == [
        ("test.csv:3", "malformed row"), ("test.csv:4", "malformed row"), ("test.csv:5", "malformed row"),
        ("test.csv:6", "malformed row")]
    assert dataset.skipped[0].detail == "6 fields where the header has 5"
    assert dataset.skipped[2].detail == "no path" and dataset.skipped[3].detail == "no label"

    jsonl = write_manifest(audio_folder, ".jsonl", ROWS[:1], ["{not json", "[1, 2]", "", json.dumps({"path": "x"})])
    dataset = load_dataset(jsonl)
    assert len(dataset.utterances) == 1
    assert [(s.source, s.reason) for s in dataset.skipped] == [
        ("test.jsonl:2", "malformed row"), ("test.jsonl:3", "malformed row"), ("test.jsonl:5", "malformed row")]
    assert "not JSON" in dataset.skipped[0].detail and "list" in dataset.skipped[1].detail


def test_manifest_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "nothing.csv")
    (tmp_path / "data.txt").write_text("path,label\n")
    with pytest.raises(DataError, match=r"not a manifest: name it .csv, .tsv or .jsonl"):
        load_dataset(tmp_path / "data.txt")
    (tmp_path / "cols.csv").write_text("file,emotion\na.wav,sad\n")
    with pytest.raises(DataError, match="no path or label column"):
        load_dataset(tmp_path / "cols.csv")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_dataset(tmp_path / "empty.tsv")


@pytest.mark.parametrize("spelling, label", [
    ("neu", "neutral"), ("Neutral", "neutral"), (" hap ", "happy"), ("exc", "happy"), ("Excited", "happy"),
    ("happiness", "happy"), ("ang", "angry"), ("ANGER", "angry"), ("sad", "sad"), ("sadness", "sad"),
    ("fru", None), ("xxx", None), ("", None),
])
def test_label_spellings(spelling, label):
    assert normalise_label(spelling) == label


def test_every_served_label_is_its_own_spelling():
    assert [normalise_label(label) for label in LABELS] == list(LABELS)
