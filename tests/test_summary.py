"""The call summary (core.summary) on segments whose figures are known by construction."""

import json

import pytest

from ser_triton.core.contract import LABELS
from ser_triton.core.result import Result, Segment, combine
from ser_triton.core.summary import Mood, Span, Stretch, summary_lines


def segment(start: float, end: float, label: str, channel: int, strength: float = 0.7) -> Segment:
    rest = (1 - strength) / (len(LABELS) - 1)
    probabilities = {name: strength if name == label else rest for name in LABELS}
    return Segment(start, end, label, probabilities, f"{label} words", [], channel)


@pytest.fixture
def call() -> Result:
    """Two minutes and ten seconds: the agent (1) neutral, then angry twice, a long hold, angry at the end;
    the customer (2) happy briefly at a turn change and sad while the agent is angry."""
    agent = [segment(0, 5, "neutral", 1), segment(6, 10, "angry", 1), segment(10.5, 14, "angry", 1),
             segment(20, 25, "neutral", 1), segment(70, 80, "angry", 1)]
    customer = [segment(4.8, 6.2, "happy", 2), segment(12, 13.5, "sad", 2)]
    return combine("call.wav", sorted(agent + customer, key=lambda s: (s.start, s.channel)), duration=130.0,
                   channels=2)


def test_each_speakers_talk_time_and_emotion_shares(call):
    summary = call.summary()
    agent, customer = summary.speakers[1], summary.speakers[2]
    assert agent.talk_seconds == pytest.approx(27.5) and agent.segments == 5 and not agent.silent
    assert agent.emotions == pytest.approx({"happy": 0, "sad": 0, "angry": 17.5 / 27.5, "neutral": 10 / 27.5})
    assert customer.talk_seconds == pytest.approx(2.9)
    assert customer.emotions == pytest.approx({"happy": 1.4 / 2.9, "sad": 1.5 / 2.9, "angry": 0, "neutral": 0})
    assert agent.label == "angry" and customer.label == "sad"  # duration-weighted probabilities


def test_the_longest_stretch_of_each_non_neutral_emotion(call):
    agent, customer = call.summary().speakers[1], call.summary().speakers[2]
    assert set(agent.longest) == {"happy", "sad", "angry"}
    assert agent.longest["angry"] == Stretch(70, 80, 10.0, 1)  # 10 s alone beats 4 + 3.5 s in a row
    assert agent.longest["happy"] is None and agent.longest["sad"] is None
    assert customer.longest["happy"] == Stretch(4.8, 6.2, pytest.approx(1.4), 1)


def test_how_the_call_started_and_ended(call):
    agent, customer = call.summary().speakers[1], call.summary().speakers[2]
    assert agent.first_minute.label == "neutral" and agent.first_minute.talk_seconds == pytest.approx(17.5)
    assert agent.first_minute.probabilities["neutral"] == pytest.approx((10 * 0.7 + 7.5 * 0.1) / 17.5)
    assert agent.last_minute == Mood("angry", pytest.approx(segment(0, 1, "angry", 1).probabilities), 10.0)
    assert customer.first_minute.label == "sad" and customer.last_minute is None  # nothing said in the last minute


def test_overlaps_longer_than_the_paddings_and_silences_longer_than_the_set_time(call):
    summary = call.summary()
    assert summary.overlaps == [Span(12, 13.5)]  # 4.8-5 and 6-6.2 are turn changes meeting in their padding
    assert summary.overlap_seconds == pytest.approx(1.5)
    assert summary.silences == [Span(14, 20), Span(25, 70), Span(80, 130.0)]
    assert call.summary(silence_seconds=10).silences == [Span(25, 70), Span(80, 130.0)]
    assert call.summary(overlap_seconds=0.1).overlaps == [Span(4.8, 5), Span(6, 6.2), Span(12, 13.5)]


def test_a_silent_channel_is_said_to_be_silent():
    result = combine("one-sided.wav", [segment(1, 4, "sad", 1)], duration=10.0, channels=2)
    quiet = result.summary().speakers[2]
    assert quiet.silent and quiet.talk_seconds == 0 and quiet.segments == 0 and quiet.label is None
    assert quiet.longest == {"happy": None, "sad": None, "angry": None} and quiet.first_minute is None
    assert "channel 2: silent (no speech)" in summary_lines(result.summary())
    assert result.summary().silences == [Span(4, 10.0)] and result.summary().overlaps == []


def test_the_json_summary_has_the_speakers_by_channel_and_spans(call):
    record = json.loads(json.dumps(call.summary().to_json_dict()))
    assert set(record) >= {"speakers", "overlaps", "silences", "duration"}
    assert set(record["speakers"]) == {"1", "2"}
    assert set(record["speakers"]["1"]) >= {"talk_seconds", "emotions", "longest", "first_minute", "last_minute"}
    assert record["overlaps"] == [{"start": 12, "end": 13.5}]
    assert record["speakers"]["1"]["longest"]["angry"] == {"start": 70, "end": 80, "talk_seconds": 10.0,
                                                           "segments": 1}
    mono = combine("mono.wav", [segment(0, 3, "happy", 1)], duration=3.0)
    assert set(mono.summary().to_json_dict()["speakers"]) == {"1"}
