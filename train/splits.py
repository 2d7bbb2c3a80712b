"""Split labelled utterances by speaker, never by clip: training, validation and test.

    --test-speakers A,B      those speakers are the test split
    --test-sessions 5        the speakers of those sessions are (IEMOCAP's leave-one-session-out fold)
    --val-speakers C,D       validation speakers, held out of training (default: a seeded 20% of the
                             training speakers, printed)
    --folds sessions | K     every session in turn as the test split, or K speaker folds
    --split research         IEMOCAP's research split: Session 2 as test, a random 20% of the other
                             sessions' clips as validation: the same speakers as training, so its
                             validation scores are speaker-dependent, and everything says so

Every problem is a TrainError naming the speaker, session or class, raised before any training.
"""

import random
from collections import Counter
from dataclasses import dataclass

from ser_triton.core.contract import LABELS
from ser_triton.evaluation.datasets import Utterance
from ser_triton.train.errors import TrainError

VALIDATION_SHARE = 0.2
"""The share of training speakers (or, for the research split, of clips) held out for validation."""

RESEARCH_TEST_SESSIONS = ("2",)
PARTS = ("train", "validation", "test")


@dataclass
class Split:
    name: str
    train: list[Utterance]
    validation: list[Utterance]
    test: list[Utterance]
    speaker_independent: bool
    how: str
    """One line: how the parts were chosen."""

    def part(self, name: str) -> list[Utterance]:
        return getattr(self, name)

    def speakers(self) -> dict[str, list[str]]:
        return {part: sorted({u.speaker for u in self.part(part)}) for part in PARTS}

    def describe(self) -> dict:
        """What training.json says about the split."""
        return {"name": self.name, "how": self.how, "speaker_independent": self.speaker_independent,
                "speakers": self.speakers(),
                "utterances": {part: len(self.part(part)) for part in PARTS},
                "labels": {part: label_counts(self.part(part)) for part in PARTS}}


@dataclass(frozen=True)
class SplitOptions:
    test_speakers: tuple[str, ...] = ()
    test_sessions: tuple[str, ...] = ()
    val_speakers: tuple[str, ...] = ()
    folds: str | None = None
    """"sessions", or a number of speaker folds."""
    research: bool = False
    seed: int = 0


def label_counts(utterances) -> dict[str, int]:
    counts = Counter(u.label for u in utterances)
    return {label: counts.get(label, 0) for label in LABELS}


def names(text: str | None) -> tuple[str, ...]:
    """'A, B' -> ('A', 'B')."""
    return tuple(name.strip() for name in (text or "").split(",") if name.strip())


def make_splits(utterances: list[Utterance], options: SplitOptions) -> list[Split]:
    """One split, or one per fold; each checked (check_split)."""
    _check_choice(options)
    speakers = _speakers(utterances)
    if options.research:
        splits = [research_split(utterances, options)]
    elif options.folds is not None:
        splits = folds(utterances, speakers, options)
    else:
        test = _test_speakers(utterances, speakers, options)
        splits = [speaker_split(utterances, speakers, test, options, "split", _test_named(options))]
    for split in splits:
        check_split(split)
    return splits


def _check_choice(options: SplitOptions) -> None:
    chosen = [flag for flag, given in (("--test-speakers", options.test_speakers),
                                       ("--test-sessions", options.test_sessions),
                                       ("--folds", options.folds is not None)) if given]
    if len(chosen) > 1:
        raise TrainError(f"{' and '.join(chosen)} each choose the test split: give one of them")
    if options.folds is not None and options.val_speakers:
        raise TrainError("--val-speakers with --folds: each fold holds out its own validation speakers from its "
                         "training speakers; leave --val-speakers out")
    if options.research and options.folds is not None:
        raise TrainError("--split research is one fixed split: leave --folds out")
    if not chosen and not options.research:
        raise TrainError("say which speakers to test on: --test-speakers A,B, --test-sessions N, or --folds "
                         "sessions|K (every speaker tested once)")


def _speakers(utterances: list[Utterance]) -> list[str]:
    unknown = [u for u in utterances if not u.speaker]
    if unknown:
        shown = ", ".join(str(u.path) for u in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3
                                                                else "")
        raise TrainError(f"utterances without a speaker ({len(unknown)}: {shown}): training splits by speaker, "
                         f"never by clip; give the manifest a speaker column")
    speakers = sorted({u.speaker for u in utterances})
    if len(speakers) < 2:
        raise TrainError(f"the data has {len(speakers)} speaker{'' if len(speakers) == 1 else 's'} "
                         f"({', '.join(speakers) or 'none'}): splitting by speaker needs at least two (training "
                         f"and test), and validation one more")
    return speakers


def _test_named(options: SplitOptions) -> str:
    if options.test_speakers:
        return f"test speakers {', '.join(options.test_speakers)} (--test-speakers)"
    return f"test sessions {', '.join(options.test_sessions)} (--test-sessions)"


def _test_speakers(utterances, speakers, options: SplitOptions) -> set[str]:
    if options.test_speakers:
        unknown = [s for s in options.test_speakers if s not in speakers]
        if unknown:
            raise TrainError(f"--test-speakers: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not in "
                             f"the data; its speakers: {', '.join(speakers)}")
        return set(options.test_speakers)
    return _session_speakers(utterances, options.test_sessions, "--test-sessions")


def _session_speakers(utterances, sessions, flag: str) -> set[str]:
    known = sorted({u.session for u in utterances if u.session})
    if not known:
        raise TrainError(f"{flag}: the data has no sessions (a manifest needs a session column); choose the test "
                         f"split with --test-speakers instead")
    unknown = [s for s in sessions if s not in known]
    if unknown:
        raise TrainError(f"{flag}: session {', '.join(unknown)} is not in the data; its sessions: {', '.join(known)}")
    inside = {u.speaker for u in utterances if u.session in sessions}
    outside = {u.speaker for u in utterances if u.session not in sessions}
    both = sorted(inside & outside)
    if both:
        raise TrainError(f"{flag}: speaker {', '.join(both)} speaks in session {', '.join(sessions)} and in others: "
                         f"a session split would put the same speaker in training and test; use --test-speakers")
    return inside


def speaker_split(utterances, speakers, test: set[str], options: SplitOptions, name: str, how: str) -> Split:
    """Test speakers given; validation speakers given or a seeded share of the rest."""
    rest = [s for s in speakers if s not in test]
    if options.val_speakers:
        wrong = [s for s in options.val_speakers if s not in rest]
        if wrong:
            where = "test speakers" if set(wrong) & test else "not in the data"
            raise TrainError(f"--val-speakers: {', '.join(wrong)}: {where}; validation speakers come from the "
                             f"training speakers: {', '.join(rest)}")
        validation = set(options.val_speakers)
        how_validation = "--val-speakers"
    else:
        count = max(1, round(VALIDATION_SHARE * len(rest)))
        validation = set(random.Random(options.seed).sample(rest, count)) if len(rest) > count else set()
        how_validation = f"chosen at random (seed {options.seed}), {count} of {len(rest)} training speakers"
    if len(rest) - len(validation) < 1 or not validation:
        raise TrainError(f"{how}: leaves {len(rest)} speaker{'s' if len(rest) != 1 else ''} for training and "
                         f"validation ({', '.join(rest) or 'none'}); each needs at least one: test on fewer speakers")
    parts = {"train": [], "validation": [], "test": []}
    for u in utterances:
        parts["test" if u.speaker in test else "validation" if u.speaker in validation else "train"].append(u)
    how = f"{how}; validation speakers {', '.join(sorted(validation))} ({how_validation}); the rest train"
    return Split(name, parts["train"], parts["validation"], parts["test"], True, how)


def folds(utterances, speakers, options: SplitOptions) -> list[Split]:
    """Leave-one-session-out, or K speaker folds: every speaker in exactly one test split."""
    if options.folds == "sessions":
        sessions = sorted({u.session for u in utterances if u.session})
        if len(sessions) < 2:
            raise TrainError("--folds sessions: the data has fewer than two sessions (a manifest needs a session "
                             "column); use --folds K for K speaker folds")
        groups = [(f"session {s}", _session_speakers(utterances, (s,), "--folds sessions")) for s in sessions]
    else:
        try:
            count = int(options.folds)
        except ValueError:
            raise TrainError(f"--folds {options.folds}: give sessions, or a number of speaker folds") from None
        if not 2 <= count <= len(speakers):
            raise TrainError(f"--folds {count}: between 2 and the number of speakers ({len(speakers)})")
        shuffled = random.Random(options.seed).sample(speakers, len(speakers))
        groups = [(f"speaker fold {i + 1} of {count}", set(shuffled[i::count])) for i in range(count)]
    return [speaker_split(utterances, speakers, test, options, f"fold-{i + 1}",
                          f"{label}: test speakers {', '.join(sorted(test))}")
            for i, (label, test) in enumerate(groups)]


def research_split(utterances, options: SplitOptions) -> Split:
    """The research repository's split: test sessions (default 2) or speakers; validation a seeded
    random 20% of the remaining clips, from the training speakers themselves."""
    if options.test_speakers:
        test = set(options.test_speakers)
        _test_speakers(utterances, sorted({u.speaker for u in utterances}), options)
    else:
        sessions = options.test_sessions or RESEARCH_TEST_SESSIONS
        test = _session_speakers(utterances, sessions, "--split research")
    rest = [u for u in utterances if u.speaker not in test]
    chosen = set(random.Random(options.seed).sample(range(len(rest)), round(VALIDATION_SHARE * len(rest))))
    how = (f"research split (SPEAKER-DEPENDENT validation): test speakers {', '.join(sorted(test))}; validation a "
           f"random {VALIDATION_SHARE:.0%} of the other clips (seed {options.seed}), spoken by the training speakers")
    return Split("research", [u for i, u in enumerate(rest) if i not in chosen],
                 [u for i, u in enumerate(rest) if i in chosen], [u for u in utterances if u.speaker in test],
                 False, how)


def check_split(split: Split) -> None:
    """Every class in training and test (and validation): the head learns and is scored on all four."""
    for part in PARTS:
        counts = label_counts(split.part(part))
        missing = [label for label, n in counts.items() if n == 0]
        if missing:
            speakers = ", ".join(split.speakers()[part]) or "no speakers"
            raise TrainError(f"{split.name}: the {part} split ({speakers}) has no {' or '.join(missing)} "
                             f"utterances ({', '.join(f'{k} {v}' for k, v in counts.items())}): every class must be "
                             f"in training, validation and test; choose other speakers, or map the data's labels "
                             f"with --map")
