"""core.audio: any rate, channel count, format or dtype in; mono float32 at 16 kHz out, or a clear error."""

import numpy as np
import pytest
import soundfile

from ser_triton.core.audio import AudioError, load_audio, prepare
from ser_triton.core.contract import MIN_SAMPLES, SAMPLE_RATE

RATES = [8000, 22050, 44100, 48000]
FORMATS = [f for f in ("wav", "flac", "ogg", "mp3") if f.upper() in soundfile.available_formats()]
LOSSY = {"ogg", "mp3"}


def tone(frequency: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def peak_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum)) * SAMPLE_RATE / samples.size


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", RATES)
def test_files_of_any_rate_channels_and_format_become_16k_mono(tmp_path, rate, channels, fmt):
    left = tone(1000, rate)
    samples = left if channels == 1 else np.stack([left, 0.5 * left], axis=1)
    path = tmp_path / f"tone.{fmt}"
    soundfile.write(path, samples, rate)

    audio = load_audio(path)

    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - SAMPLE_RATE) <= (0.05 * SAMPLE_RATE if fmt in LOSSY else 1)
    assert abs(peak_frequency(audio) - 1000) <= 2
    expected_rms = rms(left) * (1 if channels == 1 else 0.75)
    assert rms(audio) == pytest.approx(expected_rms, rel=0.1 if fmt in LOSSY else 0.01)
    np.testing.assert_array_equal(load_audio(path.read_bytes()), audio)
    np.testing.assert_array_equal(load_audio(str(path)), audio)


@pytest.mark.parametrize("frequency", [150, 1000, 3500])
@pytest.mark.parametrize("rate", RATES)
def test_resampling_keeps_the_frequency_and_the_duration(rate, frequency):
    audio = prepare(tone(frequency, rate, seconds=2.0), rate)
    assert audio.size == 2 * SAMPLE_RATE
    assert abs(peak_frequency(audio) - frequency) <= 1
    assert rms(audio) == pytest.approx(rms(tone(frequency, SAMPLE_RATE, seconds=2.0)), rel=0.01)


def test_16k_audio_is_passed_through_unchanged():
    samples = tone(440, SAMPLE_RATE)
    np.testing.assert_array_equal(prepare(samples, SAMPLE_RATE), samples)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float64])
def test_integer_and_float64_arrays_are_scaled_like_float32(dtype):
    reference = tone(440, 22050)
    if np.dtype(dtype).kind == "i":
        samples = np.round(reference * np.iinfo(dtype).max).astype(dtype)
    else:
        samples = reference.astype(dtype)
    audio = prepare(samples, 22050)
    assert audio.dtype == np.float32
    np.testing.assert_allclose(audio, prepare(reference, 22050), atol=1e-4)


def test_stereo_arrays_are_averaged():
    left, right = tone(440, SAMPLE_RATE), tone(880, SAMPLE_RATE)
    np.testing.assert_allclose(prepare(np.stack([left, right], axis=1), SAMPLE_RATE), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("samples, message", [
    (np.zeros(0, np.float32), "empty"),
    (np.zeros((0, 2), np.float32), "empty"),
    (np.array([0.1, np.nan] * 1000, np.float32), "NaN"),
    (np.array([0.1, np.inf] * 1000, np.float32), "infinite"),
    (np.array([0.1, -np.inf] * 1000, np.float64), "infinite"),
    (np.zeros(MIN_SAMPLES - 1, np.float32), "too short"),
    (np.zeros((2, 2, 1000), np.float32), "shape"),
    (np.array(["a"] * 1000), "dtype"),
])
def test_unusable_arrays_are_refused_with_the_reason(samples, message):
    with pytest.raises(AudioError, match=message):
        prepare(samples, SAMPLE_RATE)


def test_too_short_after_resampling_and_a_bad_rate_are_refused():
    with pytest.raises(AudioError, match="too short"):
        prepare(np.zeros(MIN_SAMPLES, np.float32), 48000)
    with pytest.raises(AudioError, match="sample rate"):
        prepare(np.zeros(SAMPLE_RATE, np.float32), 0)


def test_nan_and_inf_in_a_float_file_are_refused(tmp_path):
    for value in (np.nan, np.inf):
        samples = tone(440, SAMPLE_RATE)
        samples[100] = value
        path = tmp_path / "bad.wav"
        soundfile.write(path, samples, SAMPLE_RATE, subtype="FLOAT")
        with pytest.raises(AudioError, match="NaN or infinite"):
            load_audio(path)


def test_an_audio_file_without_samples_is_refused(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="empty"):
        load_audio(path)


def test_a_too_short_file_is_refused(tmp_path):
    path = tmp_path / "click.wav"
    soundfile.write(path, tone(440, SAMPLE_RATE, seconds=0.01), SAMPLE_RATE)
    with pytest.raises(AudioError, match="too short"):
        load_audio(path)


@pytest.mark.parametrize("content", [
    b"",
    b"this is a text file, not audio\n",
    b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(range(256)) * 4,
    bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
], ids=["zero-bytes", "text", "corrupt-wav-header", "random-bytes"])
def test_files_that_are_not_audio_are_refused(tmp_path, content):
    path = tmp_path / "not-audio.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(path)
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(content)


def test_a_missing_file_and_a_directory_are_refused(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)
