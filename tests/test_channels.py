"""Channels as speakers, without a server: which lanes a recording gets, the lanes' audio, the client's
split classification on a fake Triton, the merge of live lanes' events, subtitles and timeline lanes."""

import queue
import threading

import numpy as np
import pytest

from ser_triton.client import timeline
from ser_triton.client.lanes import MergedStreams
from ser_triton.client.library import NoSpeech, SERClient
from ser_triton.client.stream import Answered, StreamError
from ser_triton.core.audio import AudioError, prepare
from ser_triton.core.channels import lane_audio, lanes, parse_channel_map, same_channels, silent
from ser_triton.core.contract import SAMPLE_RATE
from ser_triton.core.result import Segment, StreamEvent, combine
from tests.test_client_library import triton, tone  # noqa: F401  (the fake Triton's fixture)

RATE = SAMPLE_RATE


def call(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    size = max(left.size, right.size)
    return np.stack([np.pad(left, (0, size - left.size)), np.pad(right, (0, size - right.size))], axis=1)


def test_two_different_channels_are_split_by_default_and_anything_else_is_mixed():
    assert lanes(1) is None
    assert lanes(2, same=False) == [0, 1]
    assert lanes(2, same=True) is None  # a mono recording stored as stereo
    assert lanes(2) == [0, 1]  # live: not known ahead, split
    assert lanes(6, same=False) is None  # a microphone array, film sound: one lane unless a map says otherwise
    assert lanes(2, "mix", same=False) is None and lanes(2, "split", same=True) == [0, 1]


def test_more_than_two_channels_under_split_need_a_channel_map():
    with pytest.raises(AudioError, match="6 channels, and split follows 2.*--channel-map 1,2.*--channels mix"):
        lanes(6, "split")
    assert lanes(6, "split", (3, 1)) == [2, 0] and lanes(6, None, (5,)) == [4]
    with pytest.raises(AudioError, match="names channel 3, but the audio has 2 channels"):
        lanes(2, None, (1, 3))
    with pytest.raises(ValueError, match="use it with split, not mix"):
        lanes(6, "mix", (1, 2))
    for bad in ("0,1", "1,1", "a,b", ""):
        with pytest.raises(ValueError, match="channel"):
            parse_channel_map(bad)
    assert parse_channel_map("3,1") == (3, 1)


def test_the_same_audio_on_both_channels_is_one_speaker():
    voice = tone(1.0)
    assert same_channels(call(voice, voice)) and same_channels(call(voice, voice + 1e-5))
    assert not same_channels(call(voice, 0.5 * voice)) and not same_channels(call(voice, np.zeros(1)))


def test_a_mix_is_mixed_before_it_is_resampled_and_split_channels_each_resampled_alone():
    stereo = call(tone(1.0), 0.3 * tone(1.0)[::-1])
    [mixed], split = lane_audio(stereo, 44100, "mix")
    assert not split and np.array_equal(mixed, prepare(stereo, 44100))
    [left, right], split = lane_audio(stereo, 44100)
    assert split and np.array_equal(left, prepare(stereo[:, 0], 44100))
    assert np.array_equal(right, prepare(stereo[:, 1], 44100))
    [only], split = lane_audio(stereo, 44100, channel_map=(2,))  # one channel picked out: a mono recording
    assert not split and np.array_equal(only, right)
    [mono], split = lane_audio(tone(1.0), RATE, "split")
    assert not split and np.array_equal(mono, tone(1.0))


def test_a_lane_under_minus_60_dbfs_is_silent():
    rng = np.random.default_rng(0)
    assert silent(np.zeros(RATE, np.float32)) and silent((10 ** (-70 / 20) * rng.uniform(-1, 1, RATE)))
    assert not silent(10 ** (-50 / 20) * rng.uniform(-1, 1, RATE)) and not silent(tone(0.5))


# --- the client on a fake Triton (tests.test_client_library.FakeTriton: answers from the length) ------------

def test_split_channels_are_classified_as_speakers_in_time_order(triton):  # noqa: F811
    left = np.concatenate([tone(3.0), np.zeros(RATE * 2, np.float32)])
    right = np.concatenate([np.zeros(RATE * 1, np.float32), tone(2.5)])
    with SERClient(protocol="http") as client:
        result = client.classify(call(left, right), sample_rate=RATE)  # the default: both channels differ
    assert result.channels == 2 and [segment.channel for segment in result.segments] == [1, 2]
    assert [(s.start, s.end) for s in result.segments] == [(0.0, 5.0), (0.0, 5.0)]  # one window each, over HTTP
    assert triton.calls == 2 and result.duration == 5.0
    with SERClient(protocol="http", channels="mix") as client:
        assert client.classify(call(left, right), sample_rate=RATE).channels == 1


def test_a_silent_channel_gets_no_segments_and_all_silent_is_no_speech(triton):  # noqa: F811
    quiet = np.zeros(RATE * 4, np.float32)
    with SERClient(protocol="http") as client:
        result = client.classify(call(tone(4.0), quiet), sample_rate=RATE)
        assert result.channels == 2 and {segment.channel for segment in result.segments} == {1}
        assert triton.calls == 1  # the silent channel never went to the server
        with pytest.raises(NoSpeech, match="no speech found on any of its 2 channels"):
            client.classify(call(quiet, quiet + 1e-4), sample_rate=RATE, name="hum")  # differ, both silent


def test_six_channels_split_name_the_way_out_and_a_channel_map_follows_the_named_ones(triton):  # noqa: F811
    six = np.stack([tone(1.0) * (k + 1) / 8 for k in range(6)], axis=1)
    with SERClient(protocol="http", channels="split") as client, pytest.raises(AudioError, match="--channel-map"):
        client.classify(six, sample_rate=RATE)
    with SERClient(protocol="http", channel_map=(6, 2)) as client:
        result = client.classify(six, sample_rate=RATE)
    assert result.channels == 2 and [segment.channel for segment in result.segments] == [1, 2]


# --- live lanes merged --------------------------------------------------------------------------------------

class ScriptedStream:
    """A lane's stream that gives (chunk, event) and Answered(chunk) items as scripted, when let."""

    def __init__(self, script, gate: threading.Event | None = None):
        self.script, self.gate, self.errors = script, gate, queue.Queue()

    def items(self):
        if self.gate is not None:
            self.gate.wait(10)
        for item in self.script:
            if isinstance(item, Exception):
                raise item
            yield item

    def cancel(self, reason="cancelled"):
        pass


def event(kind: str, start: float, end: float | None = None) -> StreamEvent:
    return StreamEvent(kind, round(start * RATE), None if end is None else round(end * RATE))


def test_lanes_events_are_merged_in_audio_order_whatever_arrives_first():
    first = [(2, event("speech_start", 0.2)), Answered(0), Answered(1), Answered(2), Answered(3),
             (4, event("utterance", 0.2, 1.0)), Answered(4), Answered(5)]
    second = [Answered(0), (1, event("speech_start", 0.1)), Answered(1), Answered(2),
              (3, event("utterance", 0.1, 0.6)), Answered(3), Answered(4), Answered(5)]
    for late in (0, 1):  # each lane in turn holds back until the other has given everything
        gate = threading.Event()
        scripts = [first, second]
        streams = iter([ScriptedStream(script, gate if lane == late else None) for lane, script in enumerate(scripts)])
        merged = MergedStreams([np.zeros((10, 2), np.float32)], [0, 1], lambda chunks: next(streams))
        threading.Timer(0.3, gate.set).start()
        got = [(e.channel, e.event, e.start) for e in merged]
        assert got == [(2, "speech_start", 0.1), (1, "speech_start", 0.2), (2, "utterance", 0.1), (1, "utterance", 0.2)]


def test_an_error_on_one_lane_ends_the_merged_stream_naming_the_channel():
    streams = iter([ScriptedStream([Answered(0)]), ScriptedStream([Answered(0), StreamError("bad chunk")])])
    merged = MergedStreams([np.zeros((10, 2), np.float32)], [0, 1], lambda chunks: next(streams))
    with pytest.raises(StreamError, match="channel 2: bad chunk"):
        list(merged)


# --- subtitles and timeline -----------------------------------------------------------------------------------

def two_speakers() -> object:
    def segment(start, end, channel, label, transcript):
        probabilities = {name: 0.1 for name in ("happy", "sad", "angry", "neutral")} | {label: 0.7}
        return Segment(start, end, label, probabilities, transcript, [], channel)
    segments = [segment(0.5, 3.0, 1, "neutral", "HELLO <unk> & GOODBYE"), segment(2.0, 4.0, 2, "angry", "NO")]
    return combine("call.wav", segments, duration=5.0, channels=2)


def test_subtitles_of_split_channels_carry_voice_tags_and_escaped_text():
    text = timeline.subtitles(two_speakers())
    assert "<v Channel 1>[neutral 0.70] HELLO &lt;unk&gt; &amp; GOODBYE\n" in text
    assert "<v Channel 2>[angry 0.70] NO\n" in text
    one = combine("mono.wav", [s for s in two_speakers().segments if s.channel == 1])
    assert "<v " not in timeline.subtitles(one)


def test_the_timeline_has_a_lane_per_speaker(tmp_path):
    import matplotlib.image

    result = two_speakers()
    timeline.write_timeline(result, tmp_path / "two.png")
    one = combine("mono.wav", [s for s in result.segments if s.channel == 1], duration=5.0)
    timeline.write_timeline(one, tmp_path / "one.png")
    two, single = (matplotlib.image.imread(tmp_path / name) for name in ("two.png", "one.png"))
    assert two.shape[1] == single.shape[1] and two.shape[0] > 1.6 * single.shape[0]
