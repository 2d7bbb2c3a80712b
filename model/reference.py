"""The research pipeline in PyTorch, as the research code runs it, one utterance at a time.

ASR (wav2vec2 CTC, greedy) -> transcript -> BertTokenizer -> BERT; HuBERT on the same audio;
the fusion head without masks. This is the ground truth the served ensemble is checked against:

    python -m ser_triton.model.reference speech.wav --preset tiny --json
"""

import argparse
import json
import logging
import sys

import numpy as np
import torch
from transformers import Wav2Vec2FeatureExtractor

from ser_triton.core.audio import AudioError, load_audio
from ser_triton.core.contract import LABELS, SAMPLE_RATE
from ser_triton.core.result import Result, combine, make_segment, segment_bounds
from ser_triton.model.errors import ModelError
from ser_triton.model.sources import Components, add_model_arguments, components_from_args, warn_if_untrained


class ResearchPipeline:
    def __init__(self, components: Components):
        self.c = components
        self.normaliser = Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True
        )

    def normalise(self, audio: np.ndarray) -> torch.Tensor:
        values = self.normaliser(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_values
        return torch.from_numpy(values)

    @torch.inference_mode()
    def transcribe(self, audio: np.ndarray) -> str:
        ids = self.c.asr(self.normalise(audio)).logits.argmax(dim=-1)
        return self.c.ctc_tokenizer.batch_decode(ids)[0]

    @torch.inference_mode()
    def logits(self, audio: np.ndarray, transcript: str) -> torch.Tensor:
        """The fusion head's logits, float32 whatever the networks ran in (bf16 under autocast, say)."""
        tokens = self.c.bert_tokenizer(transcript, truncation=True, return_tensors="pt")
        text = self.c.text_encoder(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).last_hidden_state
        acoustic = self.c.acoustic_encoder(self.normalise(audio)).last_hidden_state
        return self.c.fusion_head.research_logits(acoustic, text)[0].float()

    def predict(self, audio: np.ndarray) -> tuple[np.ndarray, str]:
        """(probabilities in LABELS order, transcript) for one utterance."""
        transcript = self.transcribe(audio)
        probabilities = torch.softmax(self.logits(audio, transcript), dim=-1).numpy()
        return probabilities, transcript

    def classify(self, audio: np.ndarray, name: str = "<array>") -> Result:
        """A whole recording, split into the same segments as the client splits it."""
        segments = []
        for start, end in segment_bounds(len(audio)):
            probabilities, transcript = self.predict(audio[start:end])
            segments.append(make_segment(start, end, probabilities, transcript))
        return combine(name, segments)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_triton.model.reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="audio files")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        pipeline = ResearchPipeline(components_from_args(args))
    except ModelError as error:
        print(f"python -m ser_triton.model.reference: {error}", file=sys.stderr)
        return 1
    warn_if_untrained(pipeline.c)
    failed = 0
    for name in args.files:
        try:
            result = pipeline.classify(load_audio(name), name)
        except AudioError as error:
            print(f"{name}: {error}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(result.to_json_dict()))
        else:
            scores = "  ".join(f"{label} {result.probabilities[label]:.3f}" for label in LABELS)
            print(f"{name}\t{result.label}\t{scores}\t{result.transcript!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
