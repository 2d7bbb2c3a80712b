"""Labelled speech to evaluate on: a manifest (CSV, TSV, JSON lines) or an IEMOCAP release folder.

    dataset = load_dataset("data/test.csv")                               # path,label[,text,speaker,session]
    dataset = load_dataset("IEMOCAP_full_release", sessions=["5"])        # the 4-class setup, session 5
    dataset = load_dataset("ravdess/manifest.csv", label_map=parse_label_map(["calm=neutral", "fearful=drop"]))

Every row that cannot be used (a malformed row, a label outside the served classes, a missing
audio file) becomes a `Skipped` entry with its reason; nothing is dropped silently and no row
stops the others. Only a data set that cannot be read at all raises `DataError`.

A label map (`--map excited=happy`, `--map calm,fearful=drop`) says what the data's other labels
mean: a served label, or `drop` (left out by design, and counted). It is read here, for every
command that reads labelled speech (ser-evaluate, ser-train).
"""

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ser_triton.core.contract import LABELS


class DataError(ValueError):
    """The data set as a whole cannot be read; the message names it and says what to do."""


@dataclass
class Utterance:
    id: str
    path: Path
    label: str  # one of LABELS
    text: str | None = None  # reference transcript
    speaker: str | None = None
    session: str | None = None
    original_label: str | None = None  # the label as the data spells it (`exc`, `Calm`...)
    channel: int | None = None  # the channel (from 1) that holds the labelled speaker; None: the whole audio


@dataclass
class Skipped:
    source: str  # where the row is: manifest line, or IEMOCAP utterance id
    reason: str  # the kind of problem, counted in the summary
    detail: str = ""  # this row's particulars
    by_design: bool = False  # left out by the data set's setup (IEMOCAP's other categories, --map X=drop)
    label: str | None = None  # the row's label as the data spells it, where its label is why it is skipped

    def line(self) -> str:
        return f"{self.source}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Dataset:
    name: str
    kind: str  # "manifest" or "iemocap"
    source: Path
    utterances: list[Utterance]
    skipped: list[Skipped] = field(default_factory=list)

    def skipped_reasons(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped).most_common())


LABEL_SPELLINGS = {
    "happy": ("hap", "happiness", "exc", "excited", "excitement", "joy"),
    "sad": ("sadness",),
    "angry": ("ang", "anger"),
    "neutral": ("neu",),
}
"""Other ways data sets spell each served label (the label itself is always accepted)."""
assert set(LABEL_SPELLINGS) == set(LABELS), "LABEL_SPELLINGS must cover exactly core.contract.LABELS"

_LABEL_OF = {spelling: label for label, spellings in LABEL_SPELLINGS.items() for spelling in (label, *spellings)}

IEMOCAP_CATEGORIES = {
    "neu": "neutral", "hap": "happiness", "exc": "excited", "sad": "sadness", "ang": "anger",
    "fru": "frustration", "sur": "surprise", "fea": "fear", "dis": "disgust", "oth": "other",
    "xxx": "no majority",
}
"""IEMOCAP's category codes and what they mean (EmoEvaluation summary lines)."""

IEMOCAP_SPELLINGS = {"fru": ("frustrated",), "sur": ("surprised",), "fea": ("fearful",), "dis": ("disgusted",)}
"""Further names a label map may give IEMOCAP's categories by (besides the code and its meaning)."""


LEFT_OUT = "drop"
"""The --map target that leaves a label out: `--map calm=drop`."""


def parse_label_map(items) -> dict[str, str]:
    """`["excited=happy", "calm,fearful=drop"]` -> {spelling (lower case): served label or LEFT_OUT}."""
    label_map = {}
    for item in items or ():
        spellings, equals, target = str(item).partition("=")
        target = target.strip().lower()
        names = [s.strip().lower() for s in spellings.split(",") if s.strip()]
        if not equals or not names or target not in (*LABELS, LEFT_OUT):
            raise DataError(f"--map {item}: give LABEL=TARGET (LABEL as the data spells it, several joined by "
                            f"commas), TARGET one of {', '.join(LABELS)} or {LEFT_OUT} to leave it out; "
                            f"e.g. --map excited=happy --map calm,fearful=drop")
        for name in names:
            if label_map.get(name, target) != target:
                raise DataError(f"--map: {name!r} is mapped twice, to {label_map[name]} and to {target}")
            label_map[name] = target
    return label_map


def normalise_label(text: str, label_map: dict[str, str] | None = None) -> str | None:
    """The served label a data set's spelling means (`neu`, `Neutral`, `exc`...), LEFT_OUT where the
    label map leaves it out, or None. The label map comes first."""
    spelling = text.strip().lower()
    if label_map and spelling in label_map:
        return label_map[spelling]
    return _LABEL_OF.get(spelling)


def _left_out(source: str, spelling: str) -> Skipped:
    return Skipped(source, f"label {spelling.strip().lower()!r} left out (--map)", by_design=True, label=spelling)


def load_dataset(path: str | Path, sessions=None, excited: str = "happy", label_map: dict | None = None) -> Dataset:
    """A manifest file or an IEMOCAP release folder, told apart by what `path` is.

    label_map: parse_label_map's result, for labels the data spells otherwise than LABEL_SPELLINGS."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder: give a manifest (.csv, .tsv, .jsonl) or an IEMOCAP folder")
    if path.is_dir():
        return read_iemocap(path, sessions, excited, label_map)
    return read_manifest(path, sessions, label_map)


# Manifests ------------------------------------------------------------------------------------

MANIFEST_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("text", "speaker", "session", "id", "channel")


def _manifest_rows(path: Path, kind: str):
    """(line number, row dict or a string saying why the line is not a row)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the manifest ({error})") from None
    if kind == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, f"not JSON ({error.msg})"
                continue
            yield number, row if isinstance(row, dict) else f"a JSON {type(row).__name__}, not an object"
        return
    reader = csv.reader(text.splitlines(), delimiter="," if kind == "csv" else "\t")
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: the manifest is empty: it needs a header line with {', '.join(REQUIRED_COLUMNS)}")
    columns = [name.strip().lower() for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise DataError(f"{path}: the manifest has no {' or '.join(missing)} column "
                        f"(its header: {', '.join(header)}): the columns are "
                        f"{', '.join(REQUIRED_COLUMNS)}, optionally {', '.join(OPTIONAL_COLUMNS)}")
    for fields in reader:
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(columns):
            yield reader.line_num, f"{len(fields)} fields where the header has {len(columns)}"
            continue
        yield reader.line_num, dict(zip(columns, fields))


def _field(row: dict, name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _name(stem: str, sessions) -> str:
    """The data set's name (the default output folder): file or folder name, and the sessions picked."""
    return stem + "".join(f"-session{session}" for session in sessions)


def _session_filter(sessions) -> set[str] | None:
    return None if sessions is None else {str(session).strip() for session in sessions}


def read_manifest(path: Path, sessions=None, label_map: dict | None = None) -> Dataset:
    """Rows with `path` and `label` (and optionally `text`, `speaker`, `session`, `id`, `channel`).

    Relative paths resolve against the manifest's folder. `sessions` keeps the rows whose
    `session` is one of them. `channel` (from 1) names the channel that holds the labelled speaker
    (a labelled call: a row per party); that channel alone is classified.
    """
    kind = MANIFEST_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: not a manifest: name it .csv, .tsv or .jsonl (columns "
                        f"{', '.join(REQUIRED_COLUMNS)}, optionally {', '.join(OPTIONAL_COLUMNS)}), "
                        f"or give an IEMOCAP release folder")
    wanted = _session_filter(sessions)
    utterances, skipped, sessions_seen = [], [], set()
    for number, row in _manifest_rows(path, kind):
        source = f"{path.name}:{number}"
        if isinstance(row, str):
            skipped.append(Skipped(source, "malformed row", row))
            continue
        row = {str(key).strip().lower(): value for key, value in row.items()}
        audio, spelling, session = _field(row, "path"), _field(row, "label"), _field(row, "session")
        if audio is None or spelling is None:
            skipped.append(Skipped(source, "malformed row", f"no {'path' if audio is None else 'label'}"))
            continue
        sessions_seen.add(session)
        if wanted is not None and session not in wanted:
            continue
        label = normalise_label(spelling, label_map)
        if label == LEFT_OUT:
            skipped.append(_left_out(source, spelling))
            continue
        if label is None:
            skipped.append(Skipped(source, "unknown label",
                                   f"{spelling!r} is none of {', '.join(LABELS)} or their usual spellings",
                                   label=spelling))
            continue
        channel = _field(row, "channel")
        if channel is not None and not (channel.isdigit() and int(channel) >= 1):
            skipped.append(Skipped(source, "malformed row", f"channel {channel!r} is no channel number (1, 2, ...)"))
            continue
        file = path.parent / audio
        if not file.is_file():
            skipped.append(Skipped(source, "missing audio file", str(file)))
            continue
        utterances.append(Utterance(_field(row, "id") or audio, file, label, _field(row, "text"),
                                    _field(row, "speaker"), session, spelling,
                                    channel=None if channel is None else int(channel)))
    if wanted is not None and sessions_seen <= {None}:
        raise DataError(f"{path}: --sessions needs a session column in the manifest, and it has none")
    return Dataset(_name(path.stem, sorted(wanted or ())), "manifest", path, utterances, skipped)


# IEMOCAP --------------------------------------------------------------------------------------

FOUR_CLASS_CODES = ("neu", "hap", "exc", "sad", "ang")
"""The research setup's 4 classes: happy and excited merged into happy; every other code left out."""

_SESSION_FOLDER = re.compile(r"Session(\d+)")
_SUMMARY_LINE = re.compile(r"\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\t(\S+)\t(\S+)\t")
_TRANSCRIPT_LINE = re.compile(r"(\S+)\s*\[[\d.]+\s*-\s*[\d.]+\]:\s?(.*)")
_UTTERANCE_ID = re.compile(r"(Ses\d+)[FM]_.+_([FM])[^_]*")


def iemocap_labels(path: Path) -> list[tuple[str, str]]:
    """(utterance id, category code) from an EmoEvaluation file's tab-separated summary lines.

    The `%` header and the annotators' own lines (`C-E1:`, `A-E2:`...) are not summary lines.
    """
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [match.groups() for line in lines if (match := _SUMMARY_LINE.match(line))]


def iemocap_transcripts(path: Path) -> dict[str, str]:
    """Utterance id -> transcript, from a dialog's transcription file (none when it is missing)."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return {match[1]: match[2].strip() for line in lines if (match := _TRANSCRIPT_LINE.fullmatch(line.strip()))}


def iemocap_speaker(utterance_id: str) -> str | None:
    """The speaking actor: session and gender (`Ses01F_impro01_M013` -> `Ses01M`)."""
    match = _UTTERANCE_ID.fullmatch(utterance_id)
    return match and match[1] + match[2]


def _iemocap_session_folders(root: Path) -> dict[int, Path]:
    return {int(match[1]): folder for folder in root.iterdir()
            if folder.is_dir() and (match := _SESSION_FOLDER.fullmatch(folder.name))}


def _wanted_sessions(root: Path, found: dict[int, Path], sessions) -> list[int]:
    if sessions is None:
        return sorted(found)
    wanted = []
    for session in _session_filter(sessions):
        match = re.fullmatch(r"(?:Session)?0*(\d+)", session)
        if match is None or int(match[1]) not in found:
            raise DataError(f"--sessions {session}: {root} has sessions {', '.join(map(str, sorted(found)))}")
        wanted.append(int(match[1]))
    return sorted(wanted)


def iemocap_label(code: str, kept: tuple[str, ...], label_map: dict | None) -> str | None:
    """The served label of a category code (LEFT_OUT where the label map drops it), None where the
    4-class setup leaves it out. The label map may name a code, its meaning or IEMOCAP_SPELLINGS."""
    for spelling in (code, IEMOCAP_CATEGORIES.get(code, code), *IEMOCAP_SPELLINGS.get(code, ())):
        if label_map and spelling in label_map:
            return label_map[spelling]
    return normalise_label(code) if code in kept else None


def read_iemocap(root: Path, sessions=None, excited: str = "happy", label_map: dict | None = None) -> Dataset:
    """The IEMOCAP release as distributed, in the 4-class setup (`excited="drop"`: happy is hap only;
    a label map adds or drops categories: `frustrated=angry`)."""
    found = _iemocap_session_folders(root)
    if not found:
        raise DataError(f"{root}: a folder without Session1..Session5 subfolders: give the IEMOCAP release "
                        f"folder as distributed, or a manifest file (.csv, .tsv, .jsonl)")
    numbers = _wanted_sessions(root, found, sessions)
    kept = [code for code in FOUR_CLASS_CODES if not (code == "exc" and excited == "drop")]
    utterances, skipped = [], []
    for number in numbers:
        folder = found[number]
        evaluations = folder / "dialog" / "EmoEvaluation"
        if not evaluations.is_dir():
            raise DataError(f"{evaluations}: missing: is {root} the IEMOCAP release folder as distributed?")
        for label_file in sorted(evaluations.glob("*.txt")):
            if label_file.name.startswith("._"):  # macOS metadata files found in some copies
                continue
            dialog = label_file.stem
            transcripts = iemocap_transcripts(folder / "dialog" / "transcriptions" / label_file.name)
            for utterance_id, code in iemocap_labels(label_file):
                label = iemocap_label(code, kept, label_map)
                if label == LEFT_OUT:
                    skipped.append(_left_out(utterance_id, code))
                    continue
                if label is None:
                    meaning = IEMOCAP_CATEGORIES.get(code, "not an IEMOCAP category")
                    skipped.append(Skipped(utterance_id, f"IEMOCAP category {code} ({meaning}) is left out",
                                           by_design=True, label=code))
                    continue
                wav = folder / "sentences" / "wav" / dialog / f"{utterance_id}.wav"
                if not wav.is_file():
                    skipped.append(Skipped(utterance_id, "missing audio file", str(wav)))
                    continue
                utterances.append(Utterance(utterance_id, wav, label, transcripts.get(utterance_id),
                                            iemocap_speaker(utterance_id), str(number), code))
    name = _name(root.resolve().name, numbers if sessions is not None else ())
    return Dataset(name, "iemocap", root, utterances, skipped)
