"""The benchmark workload: seeded speech-like utterances with an IEMOCAP-like length spread.

Made once per (count, seed) and reused from bench/work/workload/: wav files (16 kHz mono
float32), a manifest with durations and texts, and a perf_analyzer `--input-data` JSON file
with one entry per utterance (base64 float32 samples, shape [samples]).

Lengths: IEMOCAP utterances run from about 1 s to 15 s+ with a mean near 4.5 s and a long right
tail. The lengths here are evenly spaced quantiles of a log-normal (median 3.75 s, sigma 0.62)
clipped to [1, 15] s, shuffled with the seed, so even a small workload keeps the spread and mean.
Speech comes from espeak-ng (several English voices, rates and pitches), sentences concatenated
with short pauses, trimmed to the target length, resampled to 16 kHz with soxr. Where espeak-ng
is not installed, the espeak-ng sentences recorded in the package (ser_triton.samples) are
used instead, each at a random speed; the manifest and the summary say which source made it.
"""

import hashlib
import json
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import soundfile
import soxr

from ser_triton import samples
from ser_triton.bench.perf_input import perf_entry
from ser_triton.core.contract import SAMPLE_RATE

WORK = Path(__file__).resolve().parent / "work"
RECORDED = samples.recorded()
MIN_SECONDS, MAX_SECONDS = 1.0, 15.0
MEDIAN_SECONDS, SIGMA = 3.75, 0.62
VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us+f3", "en-gb+f2", "en-us+m3")
SENTENCES = (
    "I can't believe you did that without asking me first.",
    "That is the best news I have heard all year.",
    "Please just leave me alone for a while.",
    "We were supposed to meet at the station at noon.",
    "Why does this always happen when I am in a hurry?",
    "Honestly, I don't care what they think anymore.",
    "She told me the whole story last night, and I cried.",
    "Let's go to the beach this weekend, it will be fun.",
    "The meeting has been moved to Thursday afternoon.",
    "You never listen to a single word I say.",
    "I miss the old house, the garden and the long summers.",
    "Can you pass me the salt, please?",
    "This is absolutely ridiculous, I want to talk to the manager.",
    "Oh wow, you actually remembered my birthday!",
    "It has been raining for three days straight.",
    "I'm sorry, I didn't mean to hurt you.",
    "The train was late again, so I walked home.",
    "Do you really think we can finish this by tomorrow?",
    "Nobody told me the flight had been cancelled.",
    "We should paint the kitchen a brighter colour.",
    "He left without saying goodbye to anyone.",
    "Fine. Do whatever you want, see if I care.",
    "My sister is getting married in the spring.",
    "I got the job! They called me this morning.",
)


class WorkloadError(RuntimeError):
    """The workload could not be made (espeak-ng missing, ...)."""


@dataclass
class Utterance:
    name: str
    path: Path
    seconds: float
    text: str

    def samples(self) -> np.ndarray:
        audio, rate = soundfile.read(self.path, dtype="float32")
        assert rate == SAMPLE_RATE
        return audio


@dataclass
class Workload:
    directory: Path
    utterances: list[Utterance]
    perf_input: Path
    seed: int
    source: str = "espeak-ng English voices, 16 kHz"

    def describe(self) -> dict:
        seconds = np.array([u.seconds for u in self.utterances])
        return {
            "utterances": len(self.utterances), "seed": self.seed, "audio_seconds": round(float(seconds.sum()), 2),
            "mean_seconds": round(float(seconds.mean()), 3), "min_seconds": round(float(seconds.min()), 3),
            "max_seconds": round(float(seconds.max()), 3), "median_seconds": round(float(np.median(seconds)), 3),
            "source": self.source, "directory": str(self.directory),
        }


def target_lengths(count: int, seed: int) -> list[float]:
    """`count` lengths in seconds: spaced quantiles of the clipped log-normal, seeded order."""
    normal = NormalDist(math.log(MEDIAN_SECONDS), SIGMA)
    quantiles = [(i + 0.5) / count for i in range(count)]
    lengths = [min(MAX_SECONDS, max(MIN_SECONDS, math.exp(normal.inv_cdf(q)))) for q in quantiles]
    order = np.random.default_rng(seed).permutation(count)
    return [round(lengths[i], 3) for i in order]


def espeak(text: str, voice: str, rate: int, pitch: int, directory: Path) -> np.ndarray:
    """One sentence, 16 kHz float32."""
    if shutil.which("espeak-ng") is None:
        raise WorkloadError("espeak-ng is not installed (apt-get install espeak-ng): it speaks the workload")
    path = directory / "sentence.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "-v", voice, "-s", str(rate), "-p", str(pitch), text],
                   check=True, capture_output=True)
    audio, rate_hz = soundfile.read(path, dtype="float32")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return soxr.resample(audio, rate_hz, SAMPLE_RATE, quality="HQ").astype(np.float32)


def recorded(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One of the repository's recorded sentences, 16 kHz, at a random speed (0.85-1.15x)."""
    from ser_triton.core.audio import load_audio

    path = RECORDED[rng.integers(len(RECORDED))]
    speed = float(rng.uniform(0.85, 1.15))
    audio = soxr.resample(load_audio(path), SAMPLE_RATE * speed, SAMPLE_RATE, quality="HQ")
    return audio.astype(np.float32), path.name


def source() -> str:
    if shutil.which("espeak-ng"):
        return "espeak-ng English voices, 16 kHz"
    return "recorded espeak-ng sentences from the repository (espeak-ng not installed), 16 kHz"


def speak(seconds: float, rng: np.random.Generator, scratch: Path) -> tuple[np.ndarray, str]:
    """Sentences by one random voice until `seconds` are filled, trimmed with a 20 ms fade."""
    voice = VOICES[rng.integers(len(VOICES))]
    rate, pitch = int(rng.integers(140, 200)), int(rng.integers(30, 70))
    live = shutil.which("espeak-ng") is not None
    target = int(seconds * SAMPLE_RATE)
    pieces, texts, have = [], [], 0
    while have < target:
        if live:
            text = SENTENCES[rng.integers(len(SENTENCES))]
            audio = espeak(text, voice, rate, pitch, scratch)
        else:
            audio, text = recorded(rng)
        pause = np.zeros(int(rng.uniform(0.1, 0.4) * SAMPLE_RATE), dtype=np.float32)
        pieces += [audio, pause]
        texts.append(text)
        have += audio.size + pause.size
    audio = np.concatenate(pieces)[:target].copy()
    fade = min(target, int(0.02 * SAMPLE_RATE))
    audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    audio += (1e-4 * rng.standard_normal(audio.size)).astype(np.float32)  # room noise, no digital silence
    return audio, " ".join(texts)


def _key(count: int, seed: int) -> str:
    recipe = json.dumps([count, seed, MIN_SECONDS, MAX_SECONDS, MEDIAN_SECONDS, SIGMA, VOICES, SENTENCES, source()])
    return f"n{count}-seed{seed}-{hashlib.sha1(recipe.encode()).hexdigest()[:8]}"


def load_or_make(count: int, seed: int = 0, root: Path = WORK / "workload", progress=None) -> Workload:
    """The cached workload for (count, seed), made first if needed."""
    directory = Path(root) / _key(count, seed)
    manifest = directory / "manifest.json"
    if not manifest.is_file():
        make(count, seed, directory, progress)
    entries = json.loads(manifest.read_text())
    utterances = [Utterance(e["name"], directory / e["file"], e["seconds"], e["text"]) for e in entries["utterances"]]
    return Workload(directory, utterances, directory / "perf_input.json", seed,
                    entries.get("source", "espeak-ng English voices, 16 kHz"))


def make(count: int, seed: int, directory: Path, progress=None) -> None:
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    entries, perf = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for i, seconds in enumerate(target_lengths(count, seed)):
            audio, text = speak(seconds, rng, Path(scratch))
            name = f"utt_{i:04d}"
            soundfile.write(partial / f"{name}.wav", audio, SAMPLE_RATE, subtype="FLOAT")
            entries.append({"name": name, "file": f"{name}.wav", "seconds": round(audio.size / SAMPLE_RATE, 4),
                            "text": text})
            perf.append(perf_entry(audio))
            if progress is not None:
                progress(1)
    (partial / "perf_input.json").write_text(json.dumps({"data": perf}))
    (partial / "manifest.json").write_text(json.dumps({"seed": seed, "source": source(), "utterances": entries},
                                                      indent=1))
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
