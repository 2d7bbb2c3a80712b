"""Every tensor of every served model, declared once.

ONNX export (input/output names, dynamic axes), parity checks, the generated config.pbtxt files
(names, dtypes, dims, reshapes) and the Python-backend steps (through their configs) all read
these declarations, so a model file and its config cannot drift apart.

Dims exclude the batch axis. -1 is a variable axis; () marks a per-utterance scalar (a length),
which ONNX sees as [batch] and Triton as dims [1] reshaped to [].
"""

from dataclasses import dataclass

from client import contract

VARIABLE = -1

# Model names in the repository, in data-path order.
AUDIO_INPUT = "audio_input"
ACOUSTIC_ENCODER = "acoustic_encoder"
ASR = "asr"
CTC_TOKENIZE = "ctc_tokenize"
TEXT_ENCODER = "text_encoder"
FUSION_HEAD = "fusion_head"
EMOTION_LABEL = "emotion_label"

ONNX_NETWORKS = (ACOUSTIC_ENCODER, ASR, TEXT_ENCODER, FUSION_HEAD)
PYTHON_STEPS = (AUDIO_INPUT, CTC_TOKENIZE, EMOTION_LABEL)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, or "bytes" for strings
    dims: tuple  # without the batch axis
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


@dataclass(frozen=True)
class Sizes:
    """The widths that depend on the preset (tiny or full size)."""

    acoustic_dim: int
    text_dim: int
    ctc_vocab: int
    labels: int = len(contract.LABELS)

    @classmethod
    def of(cls, components) -> "Sizes":
        return cls(
            components.acoustic.config.hidden_size,
            components.text.config.hidden_size,
            components.asr.config.vocab_size,
        )


def model_specs(sizes: Sizes) -> dict[str, ModelSpec]:
    T = TensorSpec
    waveform = (T("waveform", "float32", (VARIABLE,)), T("waveform_length", "int64", ()))
    acoustic = T("acoustic_features", "float32", (VARIABLE, sizes.acoustic_dim), "acoustic_frames")
    acoustic_frames = T("acoustic_frames", "int64", ())
    text_ids = (T("input_ids", "int64", (VARIABLE,)), T("attention_mask", "int64", (VARIABLE,)))
    text = T("text_features", "float32", (VARIABLE, sizes.text_dim), "attention_mask")
    probabilities = T("probabilities", "float32", (sizes.labels,))
    specs = [
        ModelSpec(AUDIO_INPUT, (T(contract.AUDIO, "float32", (VARIABLE,)),), waveform),
        ModelSpec(ACOUSTIC_ENCODER, waveform, (acoustic, acoustic_frames)),
        ModelSpec(ASR, waveform, (
            T("ctc_logits", "float32", (VARIABLE, sizes.ctc_vocab), "logit_frames"),
            T("logit_frames", "int64", ()),
        )),
        ModelSpec(
            CTC_TOKENIZE, (T("ctc_logits", "float32", (VARIABLE, sizes.ctc_vocab)),
                           T("logit_frames", "int64", ())),
            (T("transcript", "bytes", (1,)),) + text_ids,
        ),
        ModelSpec(TEXT_ENCODER, text_ids, (text,)),
        ModelSpec(FUSION_HEAD, (acoustic, acoustic_frames, text, text_ids[1]),
                  (T("logits", "float32", (sizes.labels,)), probabilities)),
        # Passes the probabilities on, so every ensemble output comes from a step no other step
        # reads: Triton 2.51 deadlocks on a request for a subset of outputs otherwise.
        ModelSpec(EMOTION_LABEL, (probabilities,),
                  (T("emotion", "bytes", (1,)), T("class_probabilities", "float32", (sizes.labels,)))),
    ]
    return {spec.name: spec for spec in specs}


ENSEMBLE_INPUTS = {contract.AUDIO: (AUDIO_INPUT, contract.AUDIO)}
"""Ensemble input -> (step, its input)."""

ENSEMBLE_OUTPUTS = {
    contract.EMOTION: (EMOTION_LABEL, "emotion"),
    contract.PROBABILITIES: (EMOTION_LABEL, "class_probabilities"),
    contract.TRANSCRIPT: (CTC_TOKENIZE, "transcript"),
}
"""Ensemble output -> (step, its output). Every other step tensor flows under its own name."""
