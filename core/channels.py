"""Who speaks on which channel: a recording's channels mixed into one speaker lane, or each its own.

Call recorders keep the agent and the customer on separate channels (call-analytics services ask
for exactly that), so a 2-channel recording is split by default: each channel is classified as a
speaker of its own, lane 1 the first channel and lane 2 the second. Mixing them would average the
agent's calm and the customer's anger into one label and lose who spoke. Two exceptions keep one
lane: channels that carry the same samples (a mono recording stored as stereo: splitting it would
report one speaker twice, always talking over themselves), and more than 2 channels (a microphone
array, film sound), which are mixed unless a channel map names the channels to follow. A live
source cannot be compared ahead of time, so a live 2-channel source is split unless told.

`--channels mix|split` (ser-infer, SERClient(channels=...)) overrides the default; `--channel-map
3,1` follows the named channels (1-based), in that order, as lanes 1, 2, ... (one channel named
alone is heard as a mono recording).
"""

import numpy as np

from ser_triton.core.audio import AudioError, prepare, to_float32

MIX, SPLIT = MODES = ("mix", "split")
SPLIT_AT_MOST = 2
"""Channels that `split` follows without a channel map: a call's two parties."""
SAME_WITHIN = 2 / 32768
"""Channels whose samples all differ by less than this (two steps of 16-bit PCM) carry the same audio."""
SILENT_PEAK = 10 ** (-60 / 20)
"""A lane whose loudest sample is under -60 dBFS holds no speech: it is not sent to the server."""


def parse_channel_map(text: str) -> tuple[int, ...]:
    """'1,2' -> (1, 2): channels numbered from 1, each once."""
    try:
        channels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"a channel map is channel numbers separated by commas, like 1,2 (not {text!r})") from None
    check_channel_map(channels)
    return channels


def check_channel_map(channels) -> None:
    if not channels or any(channel < 1 for channel in channels) or len(set(channels)) != len(channels):
        raise ValueError(f"a channel map names channels from 1 up, each once, like 1,2 (not {channels!r})")


def same_channels(samples: np.ndarray) -> bool:
    """Whether every channel of [samples, channels] carries the first one's samples."""
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[1] < 2:
        return True
    first = samples[:, :1].astype(np.float32)
    return bool(np.all(np.abs(samples.astype(np.float32) - first) < SAME_WITHIN))


def lanes(count: int, mode: str | None = None, channel_map=None, same: bool | None = None) -> list[int] | None:
    """The channels (0-based) each speaker lane follows, in lane order; None: all mixed into one lane.

    count: the audio's channels; mode: MIX, SPLIT or None (the default above); same: whether the
    channels carry the same audio (None: not known, a live source)."""
    if mode not in (None, *MODES):
        raise ValueError(f"channels must be one of {', '.join(MODES)}, not {mode!r}")
    if channel_map:
        if mode == MIX:
            raise ValueError("a channel map names the channels to follow as speakers: use it with split, not mix")
        check_channel_map(channel_map)
        beyond = [channel for channel in channel_map if channel > count]
        if beyond:
            raise AudioError(f"the channel map names channel {beyond[0]}, but the audio has {count} "
                             f"channel{'s' if count > 1 else ''}")
        return [channel - 1 for channel in channel_map]
    if count < 2 or mode == MIX:
        return None
    if mode == SPLIT:
        if count > SPLIT_AT_MOST:
            raise AudioError(f"the audio has {count} channels, and split follows {SPLIT_AT_MOST}: name the "
                             "channels to follow as speakers with a channel map (--channel-map 1,2), or mix them "
                             "(--channels mix)")
        return list(range(count))
    return list(range(count)) if count == SPLIT_AT_MOST and not same else None


def silent(samples: np.ndarray) -> bool:
    """Whether a lane holds nothing louder than SILENT_PEAK: no speech to classify."""
    return not samples.size or float(np.abs(samples).max()) < SILENT_PEAK


def lane_audio(samples, sample_rate: int, mode: str | None = None, channel_map=None) -> tuple[list[np.ndarray], bool]:
    """(each speaker lane's server-ready samples, whether the channels were split into speakers) from
    integer or float PCM shaped [samples] or [samples, channels] at `sample_rate`. A mix is mixed
    before it is resampled, as core.audio.prepare always has; each split channel is resampled on its
    own; one channel picked out by a map is one lane, a mono recording (not split)."""
    samples = to_float32(np.asarray(samples))
    if samples.ndim != 2:
        return [prepare(samples, sample_rate)], False
    count = samples.shape[1]
    same = same_channels(samples) if mode is None and not channel_map and count == SPLIT_AT_MOST else None
    chosen = lanes(count, mode, channel_map, same)
    if chosen is None:
        return [prepare(samples, sample_rate)], False
    if len(chosen) == 1:  # one channel picked out: heard as a mono recording
        return [prepare(samples[:, chosen[0]], sample_rate)], False
    return [prepare(samples[:, channel], sample_rate) for channel in chosen], True
