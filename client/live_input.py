"""Audio read as it arrives from a pipe: a WAV stream of unknown length, or raw 16-bit PCM.

`arecord -t wav`, `sox ... -t wav -` and `ffmpeg -f wav -` write a WAV header whose sizes are
unknown (0 or 0xFFFFFFFF) and then the samples for as long as they run; libsndfile wants to seek,
so the header is read here and the samples chunk by chunk, each chunk as soon as it is whole.
"""

import struct
from typing import BinaryIO, Iterator

import numpy as np

from ser_triton.core.audio import AudioError

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
_INTEGER_DTYPES = {1: "u1", 2: "<i2", 4: "<i4"}


class WavFormat:
    def __init__(self, rate: int, channels: int, dtype):
        self.rate, self.channels, self.dtype = rate, channels, np.dtype(dtype)

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.dtype.itemsize


def _read_exactly(stream: BinaryIO, count: int) -> bytes:
    data = b""
    while len(data) < count:
        piece = stream.read(count - len(data))
        if not piece:
            break
        data += piece
    return data


def read_wav_header(stream: BinaryIO) -> WavFormat:
    """The format of a WAV stream, reading up to the start of its samples."""
    riff = _read_exactly(stream, 12)
    if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RF64") or riff[8:12] != b"WAVE":
        raise AudioError("stdin is not a WAV stream: give raw 16-bit mono PCM with --raw RATE, or pipe WAV "
                         "(arecord -t wav, sox ... -t wav -, ffmpeg -f wav -)")
    found = None
    while True:
        header = _read_exactly(stream, 8)
        if len(header) < 8:
            raise AudioError("the WAV stream ended before its samples began")
        kind, size = header[:4], struct.unpack("<I", header[4:])[0]
        if kind == b"data":
            if found is None:
                raise AudioError("the WAV stream has no fmt chunk before its samples")
            return found
        body = _read_exactly(stream, size + (size & 1))
        if kind == b"fmt ":
            code, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if code == _EXTENSIBLE and len(body) >= 26:
                code = struct.unpack("<H", body[24:26])[0]
            if code == _FLOAT and bits == 32:
                found = WavFormat(rate, channels, "<f4")
            elif code == _PCM and bits // 8 in _INTEGER_DTYPES and bits % 8 == 0:
                found = WavFormat(rate, channels, _INTEGER_DTYPES[bits // 8])
            else:
                raise AudioError(f"WAV streams of format {code} with {bits}-bit samples are not read here: "
                                 "send 8/16/32-bit PCM or 32-bit float")
            if channels < 1 or rate < 1:
                raise AudioError(f"the WAV stream says {channels} channels at {rate} Hz")


def pcm_chunks(stream: BinaryIO, fmt: WavFormat, chunk_seconds: float) -> Iterator[np.ndarray]:
    """[frames, channels] arrays of about `chunk_seconds` each, each as soon as its bytes have come;
    the last one may be shorter."""
    wanted = max(1, round(chunk_seconds * fmt.rate)) * fmt.frame_bytes
    read = getattr(stream, "read1", stream.read)  # what has arrived, without waiting for the whole chunk
    pending = b""
    while True:
        piece = read(wanted - len(pending))
        if not piece:
            break
        pending += piece
        if len(pending) >= wanted:
            yield np.frombuffer(pending[:wanted], dtype=fmt.dtype).reshape(-1, fmt.channels)
            pending = pending[wanted:]
    whole = len(pending) // fmt.frame_bytes * fmt.frame_bytes
    if whole:
        yield np.frombuffer(pending[:whole], dtype=fmt.dtype).reshape(-1, fmt.channels)
