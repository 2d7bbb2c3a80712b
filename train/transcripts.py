"""The text the text branch trains on: the served ASR's transcript, or the data's own (--text reference).

The transcript of a clip is what the server would send its text encoder: the ASR network run from
the same fp32 ONNX file the export writes (export.pipeline.export_network), in the server's session
with the server's threads, one utterance at a time as a request alone runs, then decoded and
tokenised by the `ctc_tokenize` step's own code (serving.steps.text). PyTorch's ASR would differ
from ONNX Runtime's in the 5th digit, and a random ASR's CTC frames are often that close to a
tie (measured on RAVDESS's test actors: top-2 gaps down to 4e-6, |ONNX - PyTorch| up to 1e-5), so
a PyTorch transcript could differ from the served one by a letter.

The ONNX file (keyed by the ASR's weights) and the transcripts (keyed by each file's bytes) are
cached, so they are made once per ASR and corpus.
"""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ser_triton.core import specs
from ser_triton.core.glossary import ASR
from ser_triton.export.errors import ExportError
from ser_triton.export.pipeline import export_network
from ser_triton.export.repository import Deployment
from ser_triton.model.networks import served_network
from ser_triton.model.sources import BERT_MAX_TOKENS
from ser_triton.serving.steps.runtime import make_session
from ser_triton.serving.steps.text import TranscriptTokenizer, write_tokenizer_assets
from ser_triton.train import files
from ser_triton.train.errors import TrainError

TEXT_SOURCES = ("asr", "reference")


def weights_key(module: torch.nn.Module) -> str:
    """A digest of a module's weights (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:24]


def tokenizer_for(builder, folder: Path) -> TranscriptTokenizer:
    """The ctc_tokenize step's decoder and BERT tokenizer, from the files the export writes."""
    write_tokenizer_assets(folder, builder.bert_tokenizer, builder.ctc_tokenizer, BERT_MAX_TOKENS)
    return TranscriptTokenizer.from_directory(folder)


class ServedASR:
    """Audio -> transcript, exactly as the server transcribes one request."""

    def __init__(self, builder, cache: Path, text: TranscriptTokenizer):
        self.key = weights_key(served_network(builder, ASR.name))
        folder = Path(cache) / "asr" / self.key
        network = folder / "model.onnx"
        if not network.is_file():
            _export_asr(builder, folder)
        spec = specs.model_specs(specs.Sizes.of(builder))[ASR.name]
        self.inputs = (spec.input("waveform").name, spec.input("length").name)
        self.outputs = (spec.output("logits").name, spec.output("length").name)
        self.session = make_session(network, Deployment().network_threads)
        self.text = text
        self.transcripts_file = Path(cache) / "transcripts" / f"{self.key}.json"
        self.known = json.loads(self.transcripts_file.read_text()) if self.transcripts_file.is_file() else {}
        self.new = 0

    def transcribe(self, audio: np.ndarray, key: str) -> tuple[str, float]:
        """(transcript, smallest gap between a frame's two largest CTC logits) of one clip."""
        if key not in self.known:
            logits, frames = self.session.run(list(self.outputs), {self.inputs[0]: audio[None],
                                                                   self.inputs[1]: np.array([audio.size])})
            valid = logits[0, : int(frames[0])]
            top_two = np.sort(valid, axis=-1)[:, -2:]
            gap = float((top_two[:, 1] - top_two[:, 0]).min()) if len(valid) else float("inf")
            self.known[key] = [self.text.transcribe(logits, frames)[0], gap]
            self.new += 1
            if self.new % 200 == 0:
                self.save()
        transcript, gap = self.known[key]
        return transcript, gap

    def save(self) -> None:
        if self.new:
            files.write_json(self.transcripts_file, self.known)


def _export_asr(builder, folder: Path) -> None:
    """The ASR's served ONNX file into `folder`, which appears whole or not at all."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".asr-", dir=folder.parent) as scratch:
        staged = Path(scratch) / "network"
        try:
            export_network(builder, ASR.name, staged / "model.onnx", Path(scratch) / "rewrite")
        except ExportError as error:
            raise TrainError(f"the ASR network could not be exported to run as served: {error}") from None
        shutil.rmtree(folder, ignore_errors=True)
        staged.rename(folder)
