"""Audio in, server-ready samples out: any libsndfile format, rate, channel count or dtype.

This module is the one loader used by the client and by the PyTorch reference
(`python -m ser_triton.model.reference`), so both see exactly the same samples.
"""

import io
from pathlib import Path

import numpy as np
import soundfile
import soxr

from ser_triton.core.contract import MIN_SAMPLES, SAMPLE_RATE
from ser_triton.core.result import segment_bounds

AUDIO_EXTENSIONS = frozenset(
    {name.lower() for name in soundfile.available_formats()} - {"raw"}
    | {"aif", "aifc", "oga", "opus", "snd", "sph"}
)
"""Suffixes looked for inside directories: libsndfile's formats and their usual aliases."""


class AudioError(ValueError):
    """The audio cannot be used; the message says why and what to do."""


def to_float32(samples: np.ndarray) -> np.ndarray:
    """Integer PCM is scaled to [-1, 1); floats are kept as they are."""
    samples = np.asarray(samples)
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype.kind == "i":
        return (samples / float(2 ** (8 * samples.dtype.itemsize - 1))).astype(np.float32)
    if samples.dtype.kind == "u":
        half = float(2 ** (8 * samples.dtype.itemsize - 1))
        return ((samples - half) / half).astype(np.float32)
    raise AudioError(f"samples of dtype {samples.dtype} are not audio: give integer or float PCM")


def mono_float32(samples) -> np.ndarray:
    """Mono float32 from integer or float PCM shaped [samples] or [samples, channels]."""
    samples = to_float32(np.asarray(samples))
    if samples.ndim == 2:
        return samples.mean(axis=1, dtype=np.float32)
    if samples.ndim != 1:
        raise AudioError(f"audio must be [samples] or [samples, channels], not shape {samples.shape}")
    return samples


def prepare(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at SAMPLE_RATE from an array shaped [samples] or [samples, channels]."""
    samples = mono_float32(samples)
    if sample_rate <= 0:
        raise AudioError(f"sample rate must be positive, not {sample_rate}")
    if samples.size == 0:
        raise AudioError("the audio is empty (0 samples)")
    if not np.isfinite(samples).all():
        raise AudioError("the audio contains NaN or infinite samples")
    if sample_rate != SAMPLE_RATE:
        samples = soxr.resample(samples, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    if samples.size < MIN_SAMPLES:
        raise AudioError(
            f"the audio is too short: {samples.size / SAMPLE_RATE * 1000:.1f} ms, "
            f"at least {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms is needed"
        )
    return np.ascontiguousarray(samples)


def read_audio(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """(samples [samples, channels] float32 as the file holds them, its sample rate) of a file (a
    path, or its bytes) in any format libsndfile knows."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise AudioError("no such file")
        if path.is_dir():
            raise AudioError("is a directory, not an audio file")
        handle = path
    else:
        handle = io.BytesIO(source)
    try:
        return soundfile.read(handle, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"not a readable audio file ({error})") from None


def load_audio(source: str | Path | bytes) -> np.ndarray:
    """Read a file (path, or its bytes) in any format libsndfile knows, ready for the server (mono)."""
    return prepare(*read_audio(source))


def find_audio_files(paths, failures: list) -> list[str]:
    """Files as given, directories replaced by the audio files under them (sorted); a directory
    without any goes to `failures` as 'DIR: reason'."""
    files = []
    for path in paths:
        if not Path(path).is_dir():
            files.append(str(path))
            continue
        found = sorted(str(p) for p in Path(path).rglob("*")
                       if p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS and p.is_file())
        if not found:
            failures.append(f"{path}: no audio files in this directory")
        files.extend(found)
    return files


def segmented_files(paths, failures: list) -> list[tuple[str, list[np.ndarray]]]:
    """Each readable audio file under `paths` (find_audio_files) as server-ready samples, cut
    where the client cuts them (core.result.segment_bounds): (path, segments) pairs. A file that
    cannot be read goes to `failures` as 'FILE: reason'."""
    files = []
    for path in find_audio_files(paths, failures):
        try:
            audio = load_audio(path)
        except AudioError as error:
            failures.append(f"{path}: {error}")
            continue
        files.append((path, [audio[start:end] for start, end in segment_bounds(audio.size)]))
    return files
