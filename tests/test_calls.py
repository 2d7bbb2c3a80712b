"""Calls on the real server (tiny export): two channels as two speakers, files and live streams.

A call is made of the recorded sentences: the agent on the first channel, the customer on the
second, with a stretch where both speak at once; the truth is where each sentence is.
"""

import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import soundfile

from ser_triton.client.library import SERClient
from ser_triton.core import contract
from tests.conftest import REPO_ROOT
from tests.test_stream import chunked, shape, wav_header

pytestmark = pytest.mark.server
RATE = contract.SAMPLE_RATE


def seconds(value: float) -> int:
    return round(value * RATE)


def placed(length: int, parts) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A channel of `length` samples holding each (sentence, start second); where each one is."""
    channel, truth = np.zeros(length, np.float32), []
    for sentence, start in parts:
        first = seconds(start)
        channel[first:first + sentence.size] = sentence
        truth.append((first, first + sentence.size))
    return channel, truth


@pytest.fixture(scope="module")
def call(sentences):
    """(stereo [samples, 2], truth of channel 1, truth of channel 2): the agent speaks sentences 0 and 2,
    the customer 1 and 3; the customer starts sentence 1 before the agent has finished sentence 0."""
    length = seconds(1.0) + sum(s.size for s in sentences) + seconds(6.0)
    at = [1.0, 1.0 + sentences[0].size / RATE - 0.8]  # 0.8 s of both speaking
    at.append(at[1] + sentences[1].size / RATE + 1.5)
    at.append(at[2] + sentences[2].size / RATE + 1.5)
    agent, agent_truth = placed(length, [(sentences[0], at[0]), (sentences[2], at[2])])
    customer, customer_truth = placed(length, [(sentences[1], at[1]), (sentences[3], at[3])])
    return np.stack([agent, customer], axis=1), agent_truth, customer_truth


@pytest.fixture(scope="module")
def call_file(call, tmp_path_factory):
    path = tmp_path_factory.mktemp("calls") / "call.wav"
    soundfile.write(path, call[0], RATE, subtype="FLOAT")
    return path


def near(segment_or_event, truth: tuple[int, int]) -> bool:
    start, end = truth
    return (start - seconds(0.35) <= round(segment_or_event.start * RATE) <= start + seconds(0.1)
            and end - seconds(0.1) <= round(segment_or_event.end * RATE) <= end + seconds(0.5))


def test_a_two_channel_call_is_two_speakers_each_answered_as_its_own_audio(tiny_server, call, call_file):
    stereo, agent, customer = call
    with SERClient(tiny_server.grpc_url) as client:
        result = client.classify(call_file)
        for segment in result.segments:  # each segment: that channel's span alone
            alone = client.classify(stereo[round(segment.start * RATE):round(segment.end * RATE), segment.channel - 1],
                                    sample_rate=RATE)
            np.testing.assert_allclose(list(segment.probabilities.values()), list(alone.probabilities.values()),
                                       atol=1e-4)
            assert segment.transcript == alone.transcript
    assert result.channels == 2 and len(result.segments) == 4
    assert [s.channel for s in result.segments] == [1, 2, 1, 2]  # in time order
    by_channel = {1: agent, 2: customer}
    for channel, truth in by_channel.items():
        mine = [s for s in result.segments if s.channel == channel]
        assert len(mine) == len(truth) and all(near(s, t) for s, t in zip(mine, truth)), (channel, mine, truth)
    assert result.segments[1].start < result.segments[0].end  # both speaking: both kept


def test_mix_makes_one_speaker_as_before(tiny_server, call_file):
    with SERClient(tiny_server.grpc_url, channels="mix") as client:
        result = client.classify(call_file)
    assert result.channels == 1 and {s.channel for s in result.segments} == {1}
    assert len(result.segments) == 1  # under the 20 s window: the mixed recording whole, as a mono one


def test_a_live_call_runs_a_stream_per_channel_merged_in_audio_order(tiny_server, call):
    stereo, agent, customer = call
    with SERClient(tiny_server.grpc_url) as client:
        merged = list(client.stream(chunked(stereo, seconds(0.1))))
        alone = {channel: list(client.stream(chunked(stereo[:, channel - 1], seconds(0.1)))) for channel in (1, 2)}
    for channel in (1, 2):  # each channel's events are those of its audio streamed alone
        mine = [e for e in merged if e.channel == channel]
        assert shape(mine) == shape(alone[channel])
        for got, want in zip(mine, alone[channel]):
            assert (got.label, got.transcript) == (want.label, want.transcript)
    assert [e.event for e in merged if e.event != "interim"].count("utterance") == 4
    # audio order: each event comes after every event that less audio decided (a turn's end is
    # decided a pause after it, its start a quarter second in), the lanes interleaved
    decided = [e.end if e.event != "speech_start" else e.start for e in merged]
    assert decided == sorted(decided) and [e.channel for e in merged] != sorted(e.channel for e in merged)


def test_a_silent_channel_gives_no_segments(tiny_server, call, tmp_path):
    stereo, agent, _ = call
    path = tmp_path / "one-sided.wav"
    soundfile.write(path, np.stack([stereo[:, 0], np.zeros(len(stereo), np.float32)], axis=1), RATE, subtype="FLOAT")
    with SERClient(tiny_server.grpc_url) as client:
        result = client.classify(path)
    assert result.channels == 2 and [s.channel for s in result.segments] == [1, 1]


def cli(*arguments, stdin=None):
    return subprocess.run([sys.executable, str(REPO_ROOT / "client" / "infer.py"), *arguments], input=stdin,
                          capture_output=True, timeout=180)


def test_the_cli_splits_a_call_with_voice_tags_and_a_lane_per_speaker(tiny_server, call_file, tmp_path):
    png, vtt = tmp_path / "call.png", tmp_path / "call.vtt"
    done = cli(str(call_file), "--json", "--url", tiny_server.grpc_url, "--timeline", str(png), "--subtitles", str(vtt))
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    assert result["channels"] == 2 and [s["channel"] for s in result["segments"]] == [1, 2, 1, 2]
    cues = [line for line in vtt.read_text().splitlines() if line.startswith("<v ")]
    assert [cue.split(">")[0] for cue in cues] == ["<v Channel 1", "<v Channel 2", "<v Channel 1", "<v Channel 2"]
    mixed_png = tmp_path / "mixed.png"
    done = cli(str(call_file), "--url", tiny_server.grpc_url, "--channels", "mix", "--timeline", str(mixed_png))
    assert done.returncode == 0, done.stderr.decode()
    assert matplotlib.image.imread(png).shape[0] > 1.6 * matplotlib.image.imread(mixed_png).shape[0]


def test_more_channels_than_two_need_a_map_or_a_mix(tiny_server, call, tmp_path):
    stereo, agent, customer = call
    six = np.concatenate([np.zeros((len(stereo), 4), np.float32), stereo[:, ::-1]], axis=1)  # customer on 5, agent on 6
    path = tmp_path / "six.wav"
    soundfile.write(path, six, RATE, subtype="FLOAT")
    refused = cli(str(path), "--url", tiny_server.grpc_url, "--channels", "split")
    assert refused.returncode == 1 and b"--channel-map" in refused.stderr and b"Traceback" not in refused.stderr
    mapped = cli(str(path), "--json", "--url", tiny_server.grpc_url, "--channel-map", "6,5")
    assert mapped.returncode == 0, mapped.stderr.decode()
    segments = json.loads(mapped.stdout)["segments"]
    assert [s["channel"] for s in segments] == [1, 2, 1, 2]  # the agent (channel 6) is speaker 1
    assert cli(str(path), "--url", tiny_server.grpc_url, "--channel-map", "0,5").returncode == 2  # a usage error


def test_the_cli_follows_a_stereo_stream_on_stdin(tiny_server, call):
    stereo, _, _ = call
    pcm = (np.clip(stereo, -1, 1) * 32767).astype("<i2").tobytes()
    done = cli("--stream", "-", "--json", "--url", tiny_server.grpc_url, stdin=wav_header(RATE, channels=2) + pcm)
    assert done.returncode == 0, done.stderr.decode()
    events = [json.loads(line) for line in done.stdout.decode().splitlines()]
    utterances = [e for e in events if e["event"] == "utterance"]
    assert [e["channel"] for e in utterances] == [1, 2, 1, 2] and all("words" in e for e in utterances)
    table = cli("--stream", "-", "--url", tiny_server.grpc_url, stdin=wav_header(RATE, channels=2) + pcm)
    assert table.returncode == 0 and sum(line.startswith("ch2 ") for line in table.stdout.decode().splitlines()) >= 2


def test_the_summary_of_a_call_names_both_speakers_their_overlap_and_a_silent_channel(tiny_server, call, call_file,
                                                                                   tmp_path):
    stereo, agent, customer = call
    done = cli(str(call_file), "--json", "--summary", "--url", tiny_server.grpc_url)
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    summary = result["summary"]
    talk = {channel: sum(s["end"] - s["start"] for s in result["segments"] if s["channel"] == channel)
            for channel in (1, 2)}
    assert {key: speaker["talk_seconds"] for key, speaker in summary["speakers"].items()} == \
           pytest.approx({"1": talk[1], "2": talk[2]})
    for channel, truth in ((1, agent), (2, customer)):  # the padded segments hold each speaker's sentences
        spoken = sum(end - start for start, end in truth) / RATE
        assert spoken <= talk[channel] <= spoken + len(truth) * 0.8
    [overlap] = summary["overlaps"]  # the customer began 0.8 s before the agent had finished
    both = (customer[0][0] / RATE, agent[0][1] / RATE)
    assert both[0] - 0.2 <= overlap["start"] <= both[0] + 0.1 and both[1] - 0.1 <= overlap["end"] <= both[1] + 0.5
    assert summary["silences"][-1]["end"] == pytest.approx(len(stereo) / RATE)  # the call ends in 6 s of nobody
    text = cli(str(call_file), "--summary", "--url", tiny_server.grpc_url)
    assert text.returncode == 0 and b"  channel 2: talks" in text.stdout and b"  overlaps: 1 " in text.stdout
    path = tmp_path / "one-sided.wav"
    soundfile.write(path, np.stack([stereo[:, 0], np.zeros(len(stereo), np.float32)], axis=1), RATE, subtype="FLOAT")
    one_sided = cli(str(path), "--json", "--summary", "--url", tiny_server.grpc_url)
    assert one_sided.returncode == 0, one_sided.stderr.decode()
    quiet = json.loads(one_sided.stdout)["summary"]["speakers"]["2"]
    assert quiet["silent"] and quiet["talk_seconds"] == 0 and json.loads(one_sided.stdout)["summary"]["overlaps"] == []


def test_a_streams_summary_comes_after_its_events(tiny_server, call):
    stereo, _, _ = call
    pcm = (np.clip(stereo, -1, 1) * 32767).astype("<i2").tobytes()
    done = cli("--stream", "-", "--json", "--summary", "--url", tiny_server.grpc_url,
               stdin=wav_header(RATE, channels=2) + pcm)
    assert done.returncode == 0, done.stderr.decode()
    *events, last = [json.loads(line) for line in done.stdout.decode().splitlines()]
    summary = last["summary"]
    assert summary["duration"] == pytest.approx(len(stereo) / RATE) and len(summary["overlaps"]) == 1
    assert summary["speakers"]["1"]["segments"] == sum(e["event"] == "utterance" and e["channel"] == 1 for e in events)
