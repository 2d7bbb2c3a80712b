"""Every tensor of every served model, declared once, and the ensemble's data path.

ONNX export (names, dynamic axes, example inputs), parity checks, TensorRT shape ranges, the
generated config.pbtxt files (names, dtypes, dims, reshapes) and the Python-backend steps
(through their configs) all read these declarations, so a model file and its config cannot drift.

Each tensor says what it is (`role`, which the Python steps look tensors up by) and what its
variable axis counts (`axis`: samples, frames or tokens; for a length, the axis it measures).
Dims exclude the batch axis; -1 is a variable axis; () marks a per-utterance length, which ONNX
sees as [batch] and Triton as dims [1] reshaped to [].
"""

from dataclasses import dataclass

from ser_triton.core import contract
from ser_triton.core import glossary

VARIABLE = -1

# What a variable axis counts.
SAMPLES, FRAMES, TOKENS = "samples", "frames", "tokens"

# Model names in the repository: the networks (named in core.glossary) and the Python steps.
AUDIO_INPUT = "audio_input"
ACOUSTIC_ENCODER = glossary.ACOUSTIC_ENCODER.name
ASR = glossary.ASR.name
CTC_TOKENIZE = "ctc_tokenize"
TEXT_ENCODER = glossary.TEXT_ENCODER.name
FUSION_HEAD = glossary.FUSION_HEAD.name
EMOTION_LABEL = "emotion_label"

ONNX_NETWORKS = tuple(network.name for network in glossary.NETWORKS)
PYTHON_STEPS = (AUDIO_INPUT, CTC_TOKENIZE, EMOTION_LABEL)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, or "bytes" for strings
    dims: tuple  # without the batch axis
    role: str
    """What the tensor is: audio, waveform, length, logits, features, ids, mask, transcript, words,
    probabilities, label. Unique among a Python step's inputs and among its outputs."""
    axis: str | None = None
    """What its variable axis counts (SAMPLES, FRAMES, TOKENS); for a length, what it measures."""
    valid_length: str | None = None
    """For an output with a variable axis: the tensor (per-utterance length, or a 0/1 mask) that
    says how much of that axis is valid, so batched results can be cut back per request."""

    @property
    def is_length(self) -> bool:
        return self.dims == ()

    @property
    def axes(self) -> dict[int, str]:
        """ONNX dynamic axes, batch included."""
        axes = {0: "batch"}
        axes.update({i + 1: f"{self.name}_{i + 1}" for i, d in enumerate(self.dims) if d == VARIABLE})
        return axes


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def tensor(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs + self.outputs if t.name == name)

    def input(self, role: str) -> TensorSpec:
        return _by_role(self.inputs, role, f"{self.name} input")

    def output(self, role: str) -> TensorSpec:
        return _by_role(self.outputs, role, f"{self.name} output")

    @property
    def axes(self) -> set[str]:
        """The axis kinds its inputs vary along."""
        return {t.axis for t in self.inputs if t.axis}


def _by_role(tensors, role: str, what: str) -> TensorSpec:
    found = [t for t in tensors if t.role == role]
    if len(found) != 1:
        raise KeyError(f"{what} with role {role!r}: {len(found)} found")
    return found[0]


@dataclass(frozen=True)
class Sizes:
    """What depends on the preset (tiny or full size): widths and the text vocabulary."""

    acoustic_dim: int
    text_dim: int
    ctc_vocab: int
    text_vocab: int
    cls_id: int
    sep_id: int
    labels: int = len(contract.LABELS)

    @classmethod
    def of(cls, model) -> "Sizes":
        """From a model.sources.ModelBuilder or Components (their `config(name)` and tokenizer)."""
        tokenizer = model.bert_tokenizer
        return cls(
            model.config(ACOUSTIC_ENCODER).hidden_size,
            model.config(TEXT_ENCODER).hidden_size,
            model.config(ASR).vocab_size,
            model.config(TEXT_ENCODER).vocab_size,
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
        )


def model_specs(sizes: Sizes) -> dict[str, ModelSpec]:
    """Every model of the repository, in data-path order."""
    T = TensorSpec
    audio = T(contract.AUDIO, "float32", (VARIABLE,), "audio", SAMPLES)
    waveform = (T("waveform", "float32", (VARIABLE,), "waveform", SAMPLES),
                T("waveform_length", "int64", (), "length", SAMPLES))
    acoustic_frames = T("acoustic_frames", "int64", (), "length", FRAMES)
    acoustic = T("acoustic_features", "float32", (VARIABLE, sizes.acoustic_dim), "features", FRAMES,
                 acoustic_frames.name)
    logit_frames = T("logit_frames", "int64", (), "length", FRAMES)
    ctc_logits = T("ctc_logits", "float32", (VARIABLE, sizes.ctc_vocab), "logits", FRAMES, logit_frames.name)
    transcript = T("transcript", "bytes", (1,), "transcript")
    words = T("words", "bytes", (1,), "words")
    input_ids = T("input_ids", "int64", (VARIABLE,), "ids", TOKENS)
    attention_mask = T("attention_mask", "int64", (VARIABLE,), "mask", TOKENS)
    text = T("text_features", "float32", (VARIABLE, sizes.text_dim), "features", TOKENS, attention_mask.name)
    logits = T("logits", "float32", (sizes.labels,), "logits")
    probabilities = T("probabilities", "float32", (sizes.labels,), "probabilities")
    emotion = T("emotion", "bytes", (1,), "label")
    class_probabilities = T("class_probabilities", "float32", (sizes.labels,), "probabilities")
    specs = [
        ModelSpec(AUDIO_INPUT, (audio,), waveform),
        ModelSpec(ACOUSTIC_ENCODER, waveform, (acoustic, acoustic_frames)),
        ModelSpec(ASR, waveform, (ctc_logits, logit_frames)),
        ModelSpec(CTC_TOKENIZE, (ctc_logits, logit_frames), (transcript, input_ids, attention_mask, words)),
        ModelSpec(TEXT_ENCODER, (input_ids, attention_mask), (text,)),
        ModelSpec(FUSION_HEAD, (acoustic, acoustic_frames, text, attention_mask), (logits, probabilities)),
        # Passes the probabilities on, so every ensemble output comes from a step no other step
        # reads: Triton 2.51 deadlocks on a request for a subset of outputs otherwise.
        ModelSpec(EMOTION_LABEL, (probabilities,), (emotion, class_probabilities)),
    ]
    return {spec.name: spec for spec in specs}


ENSEMBLE_INPUTS = {contract.AUDIO: (AUDIO_INPUT, "audio")}
"""Ensemble input -> (step, the role of its input)."""

ENSEMBLE_OUTPUTS = {
    contract.EMOTION: (EMOTION_LABEL, "label"),
    contract.PROBABILITIES: (EMOTION_LABEL, "probabilities"),
    contract.TRANSCRIPT: (CTC_TOKENIZE, "transcript"),
    contract.WORDS: (CTC_TOKENIZE, "words"),
}
"""Ensemble output -> (step, the role of its output). Every other tensor flows under its own name."""


STREAM_CONTROLS = ("SEQUENCE_START", "SEQUENCE_END", "CORRID")
"""The sequence batcher's control inputs of the stream model: start, end, the stream's ID."""


def stream_spec() -> ModelSpec:
    """The streaming model (contract.STREAM): chunks of one stream in, events out."""
    T = TensorSpec
    return ModelSpec(contract.STREAM, (
        T(contract.CHUNK, "float32", (VARIABLE,), "audio", SAMPLES),
        T(contract.CHUNK_RATE, "int32", (1,), "rate"),
    ), (
        T(contract.EVENT, "bytes", (1,), "event"),
        T(contract.START_SAMPLE, "int64", (1,), "start"),
        T(contract.END_SAMPLE, "int64", (1,), "end"),
        T(contract.EMOTION, "bytes", (1,), "label"),
        T(contract.PROBABILITIES, "float32", (len(contract.LABELS),), "probabilities"),
        T(contract.TRANSCRIPT, "bytes", (1,), "transcript"),
        T(contract.WORDS, "bytes", (1,), "words"),
    ))


VAD = "vad"
"""Silero VAD, the stream model's speech detector: it runs inside the stream model (where each
stream's state lives), from the ONNX file the export copies next to it."""


def vad_spec() -> ModelSpec:
    """Silero VAD's tensors (16 kHz): a window with its context, the recurrent state, the rate in;
    the window's speech probability and the next state out."""
    T = TensorSpec
    return ModelSpec(VAD, (
        T("input", "float32", (VARIABLE,), "audio", SAMPLES),
        T("state", "float32", (VARIABLE, 128), "state"),
        T("sr", "int64", (), "rate"),
    ), (
        T("output", "float32", (1,), "probability"),
        T("stateN", "float32", (VARIABLE, 128), "state"),
    ))
