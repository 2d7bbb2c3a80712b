"""A small folder laid out like the IEMOCAP release, with audio made from the committed test sentences.

Two sessions, three dialogs (an improvised one with a letter in its id, a scripted one with a
`_2` part), every kind of row the reader meets: kept categories (exc merged into happy),
left-out ones (fru, xxx, sur), a labelled turn whose wav file is missing, a non-speech turn
that has a transcript but no label, a transcript made only of a bracketed non-speech token,
annotator lines, the `%` header, an EmoEvaluation subfolder and a macOS `._` file to ignore.
"""

from pathlib import Path

import soundfile

from ser_triton import samples
from ser_triton.core.audio import load_audio
from ser_triton.core.contract import SAMPLE_RATE


# dialog -> [(utterance id, category, transcript or None, has a wav file)]
DIALOGS = {
    "Ses01F_impro01": [
        ("Ses01F_impro01_F000", "neu", "Excuse me.", True),
        ("Ses01F_impro01_M000", "fru", "Do you have your forms?", True),
        ("Ses01F_impro01_F001", "exc", "Yeah, I- I finally got them!", True),
        ("Ses01F_impro01_M001", "ang", "Then why are you in this line?", False),
        ("Ses01F_impro01_F002", "xxx", "Okay.", True),
        ("Ses01F_impro01_M002", "sad", "[LAUGHTER]", True),
    ],
    "Ses03M_impro05a": [
        ("Ses03M_impro05a_F000", "hap", "We won, we actually won.", True),
        ("Ses03M_impro05a_M000", "sur", "What?", True),
    ],
    "Ses03M_script02_2": [
        ("Ses03M_script02_2_F000", "ang", "Don't you dare.", True),
        ("Ses03M_script02_2_M011", "sad", None, True),
    ],
}
EXPECTED_LABELS = {
    "Ses01F_impro01_F000": "neutral", "Ses01F_impro01_F001": "happy", "Ses01F_impro01_M002": "sad",
    "Ses03M_impro05a_F000": "happy", "Ses03M_script02_2_F000": "angry", "Ses03M_script02_2_M011": "sad",
}
"""What the 4-class reader must return for the tree (the others are left out or missing)."""


def _summary_block(start: float, utterance_id: str, code: str) -> str:
    return (f"[{start:.4f} - {start + 1.5:.4f}]\t{utterance_id}\t{code}\t[2.5000, 3.0000, 3.5000]\n"
            f"C-E1:\tNeutral;\t()\nC-E2:\tFrustration; Anger;\t(a comment)\nA-E3:\tval 3; act 2; dom  2;\t()\n\n")


def build(root: Path) -> Path:
    """Write the tree under root/IEMOCAP_full_release and return that folder."""
    release = root / "IEMOCAP_full_release"
    sentences = list(samples.sentences())
    count = 0
    for dialog, turns in DIALOGS.items():
        session = release / f"Session{int(dialog[3:5])}"
        evaluations = session / "dialog" / "EmoEvaluation"
        (evaluations / "Categorical").mkdir(parents=True, exist_ok=True)
        (session / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
        labels = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"]
        transcripts = []
        for number, (utterance_id, code, text, has_wav) in enumerate(turns):
            start = 6.2901 + 3 * number
            labels.append(_summary_block(start, utterance_id, code))
            if text is not None:
                transcripts.append(f"{utterance_id} [{start:08.4f}-{start + 1.5:08.4f}]: {text}\n")
            if has_wav:
                wav = session / "sentences" / "wav" / dialog / f"{utterance_id}.wav"
                wav.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(wav, load_audio(sentences[count % len(sentences)]), SAMPLE_RATE, subtype="PCM_16")
                count += 1
        transcripts.insert(1, f"{dialog}_MXX0 [004.0000-005.0000]: [BREATHING]\n")  # a non-speech turn
        (evaluations / f"{dialog}.txt").write_text("".join(labels))
        (evaluations / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{turns[0][0]} :Anger; ()\n")
        (evaluations / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 mac metadata")
        (session / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("".join(transcripts))
    return release
