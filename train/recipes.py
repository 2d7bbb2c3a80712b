"""Recipes: what trains and how, one small record each.

    ser-train DATA --recipe frozen                 # a recipe as it is
    ser-train DATA --recipe scratch --lr 1e-3      # any field changed on the command line

Every recipe stops early on validation UA and keeps the best epoch; the seed fixes everything
else. Which recipe suits which machine, and what each measured, is in docs/training.md.
"""

import dataclasses
from dataclasses import dataclass, field

from transformers import SchedulerType


def _knob(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    train_acoustic_encoder: bool = _knob(True, "fine-tune the acoustic encoder (HuBERT)")
    text_branch: str = _knob("train", "train: fine-tune the text encoder (BERT) with the head; frozen: BERT as it is, "
                                      "the head learns to read it; off: audio only (BERT frozen, the head's "
                                      "projection of it zero and frozen: the transcript cannot move the answer, and "
                                      "the checkpoint keeps the research format)")
    cached_features: bool = _knob(False, "run the frozen encoders once over every clip and keep their outputs "
                                         "on disk (memory-mapped); only the fusion head trains")
    learning_rate: float = _knob(1e-5, "peak learning rate (AdamW)")
    weight_decay: float = _knob(0.0, "AdamW's decoupled weight decay (0: Adam, as the research code)")
    batch_size: int = _knob(2, "clips per optimizer step, over all processes")
    epochs: int = _knob(100, "most passes over the training clips")
    patience: int = _knob(5, "stop after this many epochs without a better validation UA")
    crop_seconds: float | None = _knob(None, "cut each training clip to a random window of this many seconds "
                                             "(none: whole clips); validation and test see whole clips")
    class_balanced: bool = _knob(False, "weight the loss by inverse class frequency in the training split")
    text_dropout: float = _knob(0.0, "share of training clips whose transcript is replaced by an empty one")
    noise: float = _knob(0.0, "share of training clips given white noise at a random 10-30 dB signal-to-noise ratio")
    speed: float = _knob(0.0, "most relative speed change of a training clip (0.05: a random factor in 0.95-1.05, "
                              "pitch and tempo together, by resampling)")
    spec_augment: float | None = _knob(None, "HuBERT's SpecAugment: the share of frames masked in training "
                                             "(mask_time_prob; none: the configuration's own; 0: off)")
    encoder_dropout: float | None = _knob(None, "every dropout and LayerDrop of both encoders (none: their "
                                                "configurations' own); 0 also turns SpecAugment off")
    warmup_ratio: float = _knob(0.0, "share of the steps over which the learning rate rises linearly")
    scheduler: str = _knob("constant", "learning-rate schedule after warm-up (transformers' lr_scheduler_type: "
                                       "constant, linear, cosine)")
    max_grad_norm: float | None = _knob(None, "clip the gradient norm to this (none: no clipping)")

    def changed(self, **values) -> "Recipe":
        """This recipe with some fields changed (None values leave a field as it is)."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})

    def knobs(self) -> dict:
        return {f.name: getattr(self, f.name) for f in KNOBS}

    def problems(self) -> list[str]:
        """What makes no sense in this recipe, one line each, as --flags."""
        found = []
        if self.text_branch not in TEXT_BRANCHES:
            found.append(f"--text-branch {self.text_branch}: one of {', '.join(TEXT_BRANCHES)}")
        if self.cached_features and (self.train_acoustic_encoder or self.text_branch == "train"):
            found.append("--cached-features runs the encoders once: it needs --no-train-acoustic-encoder and "
                         "--text-branch frozen or off")
        for name, value in (("batch-size", self.batch_size), ("epochs", self.epochs), ("patience", self.patience),
                            ("learning-rate", self.learning_rate)):
            if not value > 0:
                found.append(f"--{name} must be more than 0, not {value}")
        if self.crop_seconds is not None and not self.crop_seconds > 0:
            found.append(f"--crop-seconds must be more than 0 (or none), not {self.crop_seconds}")
        for name, share in (("text-dropout", self.text_dropout), ("noise", self.noise), ("speed", self.speed),
                            ("spec-augment", self.spec_augment or 0)):
            if not 0 <= share < 1:
                found.append(f"--{name} is a share, from 0 up to 1 (not 1), not {share}")
        for name, value in (("weight-decay", self.weight_decay), ("encoder-dropout", self.encoder_dropout or 0),
                            ("warmup-ratio", self.warmup_ratio)):
            if value < 0 or (name != "weight-decay" and value >= 1):
                found.append(f"--{name} {value} is out of range")
        if self.cached_features and (self.noise or self.speed):
            found.append("--noise and --speed change the audio, which --cached-features reads once: leave them out")
        schedules = [s.value for s in SchedulerType]
        if self.scheduler not in schedules:
            found.append(f"--scheduler {self.scheduler}: one of {', '.join(schedules)}")
        return found


TEXT_BRANCHES = ("train", "frozen", "off")

KNOBS = tuple(f for f in dataclasses.fields(Recipe) if "help" in f.metadata)
"""The fields a command line may change."""

RECIPES = {
    "research": Recipe(
        "research", "the research training, for GPUs: HuBERT, BERT and the head end to end, Adam at 1e-5, "
                    "batch 2, whole clips, cross-entropy; stopped early on validation UA",
        learning_rate=1e-5, batch_size=2, epochs=100, patience=5),
    "frozen": Recipe(
        "frozen", "frozen encoders (SUPERB's protocol): their outputs computed once and cached on disk, then "
                  "only the fusion head trains, in seconds per epoch",
        train_acoustic_encoder=False, text_branch="frozen", cached_features=True,
        learning_rate=1e-3, weight_decay=0.01, batch_size=32, epochs=200, patience=20, class_balanced=True),
    "scratch": Recipe(
        "scratch", "small random networks from scratch on a CPU: the acoustic encoder and the head end to end, "
                   "audio only (the text branch off), on random 3 s crops with speed, noise and SpecAugment, "
                   "a class-balanced loss, AdamW at 1e-3 on a cosine schedule",
        text_branch="off", learning_rate=1e-3, weight_decay=0.05, batch_size=16, epochs=40, patience=15,
        crop_seconds=3.0, class_balanced=True, noise=0.5, speed=0.05, spec_augment=0.05, warmup_ratio=0.05,
        scheduler="cosine", max_grad_norm=5.0),
}


def default_recipe(preset: str, device: str) -> str:
    """research on a GPU; on a CPU, frozen for the pretrained networks (too large to fine-tune
    there) and scratch for the random presets."""
    if device == "cuda":
        return "research"
    return "frozen" if preset == "pretrained" else "scratch"
