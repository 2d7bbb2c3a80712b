"""The client library and CLI against the real server (tiny export), checked against the PyTorch reference."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from ser_triton import samples
from ser_triton.core.audio import AudioError, load_audio
from ser_triton.core.contract import CLIENT_WINDOW_SECONDS, MAX_SECONDS, SAMPLE_RATE
from ser_triton.client.library import ClientError, SERClient, ServerUnreachable
from tests.server_helpers import assert_same

pytestmark = pytest.mark.server
REPO_ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = ["grpc", "http"]
SENTENCES = list(samples.sentences())
"""espeak-ng sentences, committed (samples/make_sentences.py made them)."""
TONES = [(rate, channels, fmt) for rate in (8000, 22050, 44100, 48000) for channels in (1, 2)
         for fmt in ("wav", "flac", "ogg")]


def url(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def chord(rate: int, channels: int, seconds: float = 1.5, base: float = 180.0) -> np.ndarray:
    """Two harmonics with a syllable-like envelope; the second channel a fifth higher."""
    t = np.arange(int(rate * seconds)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    voices = [sum(np.sin(2 * np.pi * base * ratio * k * t) / k for k in (1, 2, 3)) for ratio in (1.0, 1.5)]
    return (0.2 * envelope[:, None] * np.stack(voices[:channels], axis=1)).astype(np.float32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("client-audio")


@pytest.fixture(scope="module")
def speech_files(audio_dir) -> list[Path]:
    """espeak-ng's own 22.05 kHz output, and the first sentence at other rates, stereo, in other formats."""
    files = list(SENTENCES)
    assert len(files) == 4
    samples, rate = soundfile.read(files[0], dtype="float32")
    for new_rate, fmt in ((8000, "ogg"), (44100, "flac"), (48000, "wav")):
        resampled = soxr.resample(samples, rate, new_rate)
        path = audio_dir / f"sentence0_{new_rate}_stereo.{fmt}"
        soundfile.write(path, np.stack([resampled, 0.8 * resampled], axis=1), new_rate)
        files.append(path)
    return files


@pytest.fixture(scope="module")
def tone_files(audio_dir) -> list[Path]:
    files = []
    for rate, channels, fmt in TONES:
        path = audio_dir / f"tone_{rate}_{channels}ch.{fmt}"
        soundfile.write(path, chord(rate, channels, base=120 + rate / 1000), rate)
        files.append(path)
    return files


@pytest.fixture(scope="module")
def two_minutes(audio_dir, speech_files) -> Path:
    """Two minutes at 16 kHz: the sentences with pauses, then tones, repeated."""
    pause = np.zeros(SAMPLE_RATE // 2, np.float32)
    pieces = [part for path in speech_files[:4] for part in (load_audio(path), pause)]
    pieces.append(chord(SAMPLE_RATE, 1, seconds=3.0)[:, 0])
    block = np.concatenate(pieces)
    samples = np.tile(block, -(-120 * SAMPLE_RATE // block.size))[: 120 * SAMPLE_RATE]
    path = audio_dir / "two_minutes.wav"
    soundfile.write(path, samples, SAMPLE_RATE, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def reference_results(tiny_reference):
    """The reference's result per file, computed once for both protocols."""
    cache = {}

    def result(path: Path):
        if path not in cache:
            cache[path] = tiny_reference.classify(load_audio(path), str(path))
        return cache[path]

    return result


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_client_is_ready(tiny_server, protocol):
    with SERClient(url(tiny_server, protocol), protocol) as client:
        assert client.ready()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_speech_matches_the_reference(tiny_server, speech_files, reference_results, protocol):
    with SERClient(url(tiny_server, protocol), protocol) as client:
        for path in speech_files:
            result = client.classify(path)
            assert_same(result, reference_results(path), atol=1e-4)
            assert result.latency > 0 and len(result.segments) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tones_at_any_rate_channels_and_format_match_the_reference(tiny_server, tone_files, reference_results,
                                                                   protocol):
    with SERClient(url(tiny_server, protocol), protocol) as client:
        for path in tone_files:
            assert_same(client.classify(path), reference_results(path), atol=1e-4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bytes_and_arrays_match_the_file(tiny_server, speech_files, protocol):
    path = speech_files[0]
    samples, rate = soundfile.read(path, dtype="int16")
    with SERClient(url(tiny_server, protocol), protocol) as client:
        by_path = client.classify(path)
        for other in (client.classify(path.read_bytes(), name=str(path)),
                      client.classify(samples, sample_rate=rate, name=str(path))):
            assert_same(other, by_path, atol=1e-6)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_two_minutes_are_segmented_and_combined_like_the_reference(tiny_server, two_minutes, reference_results,
                                                                   protocol):
    with SERClient(url(tiny_server, protocol), protocol, segmenter="fixed") as client:  # the reference's windows
        result = client.classify(two_minutes)
    expected = reference_results(two_minutes)
    assert len(result.segments) == int(np.ceil(120 / CLIENT_WINDOW_SECONDS)) > 1
    assert result.duration == pytest.approx(120.0)
    assert_same(result, expected, atol=1e-4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_classify_many_returns_results_in_input_order(tiny_server, speech_files, tone_files, two_minutes,
                                                      reference_results, protocol):
    missing = speech_files[0].with_name("missing.wav")
    sources = [two_minutes, *speech_files[:4], missing, *tone_files[::3]]
    with SERClient(url(tiny_server, protocol), protocol, segmenter="fixed") as client:  # the reference's windows
        results = client.classify_many(sources, concurrency=4)
    assert len(results) == len(sources)
    for path, result in zip(sources, results):
        if path == missing:
            assert isinstance(result, AudioError) and "no such file" in str(result)
        else:
            assert_same(result, reference_results(path), atol=1e-4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_json_lines_equal_the_library(tiny_server, speech_files, tone_files, two_minutes, protocol):
    files = [speech_files[0], speech_files[-1], tone_files[5], two_minutes]
    run = subprocess.run(
        [sys.executable, "client/infer.py", *map(str, files), "--json", "--concurrency", "1",
         "--url", url(tiny_server, protocol), "--protocol", protocol],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["file"] for line in lines] == list(map(str, files))
    # both cut long recordings where the speaker pauses over gRPC, in equal windows over HTTP: one default.
    # Transcripts are compared exactly: an utterance's is the same in whatever padded batch the server ran
    # it (the tiny ASR's top two logits lie further apart here than padding moves them). The recording's
    # transcript joins its segments in order, so the segments are compared first: over gRPC they come from
    # a stream, whose responses Triton may deliver out of order between chunks (client/stream.py InOrder).
    with SERClient(url(tiny_server, protocol), protocol) as client:
        for line, path in zip(lines, files):
            direct = client.classify(path).to_json_dict()
            assert set(line) == set(direct)
            assert [(s["start"], s["end"], s["transcript"]) for s in line["segments"]] == \
                   [(s["start"], s["end"], s["transcript"]) for s in direct["segments"]]
            assert (line["label"], line["transcript"], line["duration"]) == \
                   (direct["label"], direct["transcript"], direct["duration"])
            np.testing.assert_allclose(list(line["probabilities"].values()),
                                       list(direct["probabilities"].values()), atol=1e-6)


def test_cli_table_lists_every_file(tiny_server, speech_files):
    run = subprocess.run(
        [sys.executable, "client/infer.py", *map(str, speech_files[:2]), "--url", tiny_server.grpc_url],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    header, *rows = run.stdout.splitlines()
    assert header.split()[:6] == ["file", "emotion", "happy", "sad", "angry", "neutral"]
    assert [row.split()[0] for row in rows] == list(map(str, speech_files[:2]))


def test_audio_over_the_server_limit_is_refused_once_with_the_servers_reason(tiny_server, monkeypatch):
    audio = chord(SAMPLE_RATE, 1, seconds=MAX_SECONDS + 5)[:, 0]
    client = SERClient(tiny_server.grpc_url, window_seconds=MAX_SECONDS + 10, retries=3, backoff=5)
    sent = []
    send = SERClient._infer_once
    monkeypatch.setattr(SERClient, "_infer_once", lambda self, samples: sent.append(1) or send(self, samples))
    with pytest.raises(ClientError, match="too long") as caught:
        client.classify(audio, sample_rate=SAMPLE_RATE)
    assert not isinstance(caught.value, ServerUnreachable)
    assert len(sent) == 1, "a refused request must not be retried"


def test_the_sample_recording_is_classified(tiny_server):
    with SERClient(tiny_server.grpc_url) as client:
        result = client.classify(REPO_ROOT / "samples" / "speech.wav")
    assert 2.0 <= result.duration <= 4.0 and len(result.segments) == 1
