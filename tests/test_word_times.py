"""Word times: the CTC decode's frames of each word, and the served words in recording time.

The decoder is checked on CTC frames built with known words at known frames. End to end, the tiny
preset's ASR is random, so its words say nothing about where speech is: the served path is checked
on a server whose ASR is tests/word_oracle.SoundASR (it hears where sound is, on wav2vec2's 20 ms
frames), on samples/words.flac (words spoken one at a time with gaps, each word's time known to the
sample); the tiny preset's own words are checked for what holds whatever the ASR hears: they are
the transcript's words, in order, inside the audio.
"""

import json
import shutil

import numpy as np
import pytest

from ser_triton import samples
from ser_triton.client import timeline
from ser_triton.client.library import SERClient
from ser_triton.core import contract, specs
from ser_triton.core.audio import load_audio
from ser_triton.core.result import shifted_words
from ser_triton.model.sources import CTC_VOCAB
from ser_triton.serving.steps.ctc import CTCDecoder, Word
from ser_triton.serving.steps.text import TranscriptTokenizer
from tests.conftest import start_server
from tests.test_tokenizer_assets import id_sequences

RATE = contract.SAMPLE_RATE
FRAME = 320 / RATE
"""wav2vec2's CTC frame: 20 ms."""


def token(text: str) -> int:
    return CTC_VOCAB.index(text)


def frames_of(*parts) -> np.ndarray:
    """CTC frame ids from (token, frames) runs: token "" is the blank, "|" the delimiter."""
    return np.concatenate([np.full(count, token(text or "<pad>")) for text, count in parts])


def test_each_word_spans_the_frames_of_its_first_to_its_last_character():
    ids = frames_of(("", 3), ("H", 2), ("", 1), ("I", 3), ("|", 4), ("", 2), ("T", 1), ("H", 1), ("E", 1), ("", 1),
                    ("E", 2), ("R", 1), ("E", 1), ("", 5), ("|", 1), ("<unk>", 2), ("", 3))
    text, words = CTCDecoder(list(CTC_VOCAB)).decode_words(ids)
    assert text == "HI THEERE <unk>"
    assert words == [Word("HI", 3, 9), Word("THEERE", 15, 23), Word("<unk>", 29, 31)]


def test_an_empty_transcript_has_no_words():
    decoder = CTCDecoder(list(CTC_VOCAB))
    for ids in (np.zeros(0, np.int64), np.zeros(40, np.int64), frames_of(("|", 5), ("", 3), ("|", 2))):
        assert decoder.decode_words(ids) == ("", [])


def test_the_words_are_the_transcripts_words_in_order_on_their_own_frames():
    """Whatever the frames hold: the words make up the transcript, they do not overlap, and each
    starts on a frame of its first character and ends after a frame of its last."""
    decoder = CTCDecoder(list(CTC_VOCAB))
    for ids in id_sequences():
        text, words = decoder.decode_words(ids)
        assert text == decoder.decode(ids)
        assert [word.text for word in words] == text.split(), ids.tolist()
        ends = [0] + [word.end for word in words]
        for word, previous_end in zip(words, ends):
            assert previous_end <= word.first < word.end <= ids.size
            assert decoder.tokens[ids[word.first]] not in (" ", "<pad>")
            assert word.text.endswith(decoder.tokens[ids[word.end - 1]])


def test_the_clean_up_runs_words_together_with_their_frames():
    decoder = CTCDecoder(list(CTC_VOCAB), clean_up=True)
    ids = frames_of(("I", 2), ("T", 1), ("|", 2), ("'", 1), ("", 1), ("S", 2), ("|", 3), ("O", 1), ("K", 2))
    text, words = decoder.decode_words(ids)
    assert text == "IT 'S OK" and words == [Word("IT", 0, 3), Word("'S", 5, 9), Word("OK", 12, 15)]
    ids = frames_of(("O", 1), ("|", 1), ("'", 1), ("|", 1), ("S", 2), ("|", 1), ("E", 1))  # " ' " is joined
    text, words = decoder.decode_words(ids)
    assert text == "O'S E" and words == [Word("O'S", 0, 6), Word("E", 7, 8)]


def test_word_times_are_seconds_of_the_frames(tiny_components, tmp_path):
    from ser_triton.serving.steps.text import write_tokenizer_assets
    from ser_triton.model.sources import BERT_MAX_TOKENS

    asr = tiny_components.config(specs.ASR)
    write_tokenizer_assets(tmp_path, tiny_components.bert_tokenizer, tiny_components.ctc_tokenizer, BERT_MAX_TOKENS,
                           asr.inputs_to_logits_ratio)
    text = TranscriptTokenizer.from_directory(tmp_path)
    assert text.frame_samples == 320
    ids = frames_of(("", 10), ("O", 3), ("K", 2), ("|", 5), ("", 30))
    logits = np.eye(len(CTC_VOCAB), dtype=np.float32)[ids][None]
    [(transcript, words)] = text.transcribe_words(logits, np.array([ids.size]), RATE)
    assert transcript == "OK" and json.loads(words) == [{"word": "OK", "start": 10 * FRAME, "end": 15 * FRAME}]
    [(transcript, words)] = text.transcribe_words(logits, np.array([8]), RATE)  # only the valid frames count
    assert transcript == "" and json.loads(words) == []


def test_words_move_to_recording_time_exactly():
    words = [{"word": "A", "start": 0.02, "end": 0.46}]
    assert shifted_words(words, 3 * RATE + 5) == [{"word": "A", "start": (3 * RATE + 5 + 320) / RATE,
                                                   "end": (3 * RATE + 5 + 7360) / RATE}]
    assert shifted_words([], 100) == []


# --- served ------------------------------------------------------------------------------------------

WITHIN = 1.5 * FRAME
"""A word's start and end as heard on 20 ms frames (each seeing 25 ms) lie within 1.5 frames of the truth."""


@pytest.fixture(scope="module")
def sound_server(tiny_repository, tiny_components, tmp_path_factory):
    """The tiny export with tests/word_oracle.SoundASR as its ASR."""
    from tests import word_oracle

    copy = tmp_path_factory.mktemp("sound-asr") / "model_repository"
    shutil.copytree(tiny_repository, copy)
    word_oracle.install(copy, specs.Sizes.of(tiny_components))
    with start_server(copy) as server:
        yield server


@pytest.fixture(scope="module")
def spoken_words():
    path, truth = samples.words()
    return path, load_audio(path), truth


def assert_timed_like(words: list[dict], truth, offset: float = 0.0):
    assert len(words) == len(truth), (words, truth)
    for word, (_, start, end) in zip(words, truth):
        assert word["word"] == "A"
        assert abs(word["start"] - (start + offset)) <= WITHIN, (word, start + offset)
        assert abs(word["end"] - (end + offset)) <= WITHIN, (word, end + offset)


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_words_fall_on_the_spoken_words(sound_server, spoken_words, protocol):
    path, _, truth = spoken_words
    url = sound_server.grpc_url if protocol == "grpc" else sound_server.http_url
    with SERClient(url, protocol) as client:
        result = client.classify(path)
    assert result.transcript == "A A A A A"
    assert_timed_like(result.words, truth)
    assert result.segments[0].words == result.words


@pytest.mark.server
def test_a_streams_words_are_in_the_streams_time(sound_server, spoken_words):
    """The words spoken 7.3 s into a stream: the stream model moves them by the utterance's start."""
    _, audio, truth = spoken_words
    lead = 7.3
    stream = np.concatenate([np.zeros(round(lead * RATE), np.float32), audio])
    with SERClient(sound_server.grpc_url) as client:
        events = list(client.stream([stream[i:i + 1600] for i in range(0, stream.size, 1600)]))
    [utterance] = [e for e in events if e.event == "utterance"]
    assert utterance.start > lead - 0.5
    assert_timed_like(utterance.words, truth, offset=lead)
    assert utterance.to_json_dict()["words"] == utterance.words and utterance.to_json_dict()["channel"] == 1


@pytest.mark.server
def test_a_long_recordings_words_are_in_its_time(sound_server, spoken_words):
    """Past the client's window, cut where the speaker pauses or into windows: every word in recording time."""
    _, audio, truth = spoken_words
    gap = np.zeros(RATE * 3, np.float32)
    recording = np.concatenate([audio, gap, audio, gap, audio, gap, audio, gap, audio])  # 5 x 4.77 s + 12 s
    offsets = [n * (audio.size + gap.size) / RATE for n in range(5)]
    everywhere = [(w, s + offset, e + offset) for offset in offsets for w, s, e in truth]
    with SERClient(sound_server.grpc_url) as client:
        spoken = client.classify(recording, sample_rate=RATE)
    assert len(spoken.segments) == 5
    assert_timed_like(spoken.words, everywhere)
    with SERClient(sound_server.grpc_url, segmenter="fixed", window_seconds=12.0) as client:
        windows = client.classify(recording, sample_rate=RATE)
    assert len(windows.segments) == 3

    def heard(word, spoken):
        return abs(word["start"] - spoken[1]) <= WITHIN and abs(word["end"] - spoken[2]) <= WITHIN

    for segment in windows.segments:  # a word that a window's edge cuts is heard as its part: it touches the edge
        for word in segment.words:
            touches = word["start"] <= segment.start + 1e-9 or word["end"] >= segment.end - 400 / RATE
            assert touches or any(heard(word, spoken) for spoken in everywhere), word
        inside = [t for t in everywhere if segment.start + 3 * FRAME < t[1] and t[2] < segment.end - 3 * FRAME]
        assert inside and all(any(heard(word, spoken) for word in segment.words) for spoken in inside)


@pytest.mark.server
def test_subtitles_of_words_give_a_cue_per_group_of_words(sound_server, spoken_words, tmp_path):
    path, _, truth = spoken_words
    with SERClient(sound_server.grpc_url) as client:
        result = client.classify(path)
    text = timeline.subtitles(result, words_per_cue=2)
    cues = [line for line in text.splitlines() if " --> " in line]
    assert len(cues) == 3  # 5 words, 2 a cue
    firsts = [result.words[i] for i in (0, 2, 4)]
    lasts = [result.words[i] for i in (1, 3, 4)]
    assert cues == [f"{timeline.vtt_time(a['start'])} --> {timeline.vtt_time(b['end'])}" for a, b in zip(firsts, lasts)]


@pytest.mark.server
def test_the_tiny_presets_words_are_its_transcripts_inside_the_audio(tiny_server, sentences):
    """Whatever a random ASR hears: the served words are the transcript's, in order, inside the audio."""
    audio = np.concatenate([np.zeros(RATE // 2, np.float32), sentences[0], np.zeros(RATE, np.float32)])
    with SERClient(tiny_server.grpc_url) as client:
        result = client.classify(audio, sample_rate=RATE)
        [utterance] = [e for e in client.stream([audio]) if e.event == "utterance"]
    assert result.transcript and [w["word"] for w in result.words] == result.transcript.split()
    assert [w["word"] for w in utterance.words] == utterance.transcript.split()
    spans = ((result.words, 0.0, audio.size / RATE), (utterance.words, utterance.start, utterance.end))
    for words, start, end in spans:
        times = [t for w in words for t in (w["start"], w["end"])]
        assert times == sorted(times) and start <= times[0] and times[-1] <= end
