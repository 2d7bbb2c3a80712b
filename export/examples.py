"""Example inputs for any network, made from its tensor specs (by role and axis), never by name.

A case is one utterance given as the extent of each axis kind (samples, frames, tokens); each
input tensor is generated from its role: audio-like noise for waveforms, [CLS] ids [SEP] for
token ids, ones for masks, Gaussian features, and for a length the extent of the axis it measures.
"""

import numpy as np

from ser_triton.core.contract import SAMPLE_RATE
from ser_triton.core.specs import FRAMES, SAMPLES, TOKENS, ModelSpec, Sizes, TensorSpec

PARITY_EXTENTS = (
    {SAMPLES: int(0.6 * SAMPLE_RATE), FRAMES: 30, TOKENS: 2},
    {SAMPLES: int(1.3 * SAMPLE_RATE), FRAMES: 64, TOKENS: 9},
    {SAMPLES: int(2.05 * SAMPLE_RATE), FRAMES: 101, TOKENS: 17},
)
"""The utterances every export checks each network on: different lengths, the longest last."""

FIRST_WORD_ID = 1000
"""Token ids drawn for examples start here, past BERT's special and unused entries."""


def example_tensor(tensor: TensorSpec, extents: dict[str, int], sizes: Sizes, rng: np.random.Generator) -> np.ndarray:
    """One tensor of one utterance, as a batch of one."""
    if tensor.is_length:
        return np.array([extents[tensor.axis]], dtype=tensor.dtype)
    length = extents[tensor.axis]
    if tensor.role in ("audio", "waveform"):
        return (0.1 * rng.standard_normal((1, length))).astype(tensor.dtype)
    if tensor.role == "ids":
        words = rng.integers(FIRST_WORD_ID, sizes.text_vocab, length - 2)
        return np.concatenate([[sizes.cls_id], words, [sizes.sep_id]]).astype(tensor.dtype)[None]
    if tensor.role == "mask":
        return np.ones((1, length), dtype=tensor.dtype)
    if tensor.role == "features":
        return rng.standard_normal((1, length) + tuple(tensor.dims[1:])).astype(tensor.dtype)
    raise ValueError(f"no example generator for {tensor.name} (role {tensor.role!r})")


def example_inputs(spec: ModelSpec, sizes: Sizes, extents=PARITY_EXTENTS, seed: int = 0) -> list[dict]:
    """Named inputs of `spec` for each case of `extents`, each as a batch of one."""
    rng = np.random.default_rng(seed)
    return [{t.name: example_tensor(t, case, sizes, rng) for t in spec.inputs} for case in extents]
