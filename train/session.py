"""One ser-train run, from labelled speech to a calibrated research checkpoint and its report.

Everything that can be wrong is found before any training starts, and said with the file, row,
speaker or flag: unreadable data, labels without a mapping, a split without a class or a speaker,
a checkpoint of another architecture. Then, per split (or fold): the model, the Trainer (loop.py),
the best epoch's weights, a temperature fitted on validation and folded into `fc`, the test split's
predictions, and the report (report.py). Under torchrun the first process reads the data and fills
the caches, and sends what it found to the others; every process trains; the first writes.
"""

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from ser_triton.core.contract import CLIENT_WINDOW_SECONDS, LABELS
from ser_triton.evaluation import metrics
from ser_triton.evaluation.datasets import DataError, Dataset, Skipped, load_dataset
from ser_triton.model.errors import ModelError
from ser_triton.model.sources import ModelBuilder, ModelSources
from ser_triton.train import calibration, files, report, summary
from ser_triton.train.summary import TRAINING_JSON
from ser_triton.train.batches import ClipDataset
from ser_triton.train.clips import Clip, skip, survey
from ser_triton.train.errors import TrainError
from ser_triton.train.features import FeatureCache, build_cache
from ser_triton.train.loop import PROGRESS, RESUME, make_trainer
from ser_triton.train.network import ResearchModel, class_weights
from ser_triton.train.processes import is_first_process, on_first_process, processes, start_processes
from ser_triton.train.recipes import RECIPES, Recipe
from ser_triton.train.splits import PARTS, Split, SplitOptions, check_split, make_splits
from ser_triton.train.transcripts import ServedASR, tokenizer_for

def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ser-triton" / "train"


@dataclass
class TrainOptions:
    data: Path
    out: Path = Path("checkpoints")
    preset: str = "pretrained"
    sources: ModelSources = field(default_factory=ModelSources)
    checkpoint: Path | None = None
    seed: int = 0
    recipe: Recipe = RECIPES["scratch"]
    split: SplitOptions = field(default_factory=SplitOptions)
    text: str = "asr"
    label_map: dict = field(default_factory=dict)
    excited: str = "happy"
    max_seconds: float = CLIENT_WINDOW_SECONDS
    resume: bool = False
    device: str = "cpu"
    cache: Path = field(default_factory=default_cache)
    keep_all_epochs: bool = False
    bootstrap: int = metrics.RESAMPLES
    command: list = field(default_factory=list)

    def settings(self) -> dict:
        """What makes a run what it is: --resume goes on only with the same."""
        return {"data": str(Path(self.data).resolve()), "preset": self.preset, "sources": vars(self.sources),
                "checkpoint": None if self.checkpoint is None else str(Path(self.checkpoint).resolve()),
                "seed": self.seed, "recipe": self.recipe.name, "knobs": self.recipe.knobs(),
                "split": dataclasses.asdict(self.split), "text": self.text, "label_map": self.label_map,
                "excited": self.excited, "max_seconds": self.max_seconds, "device": self.device,
                "processes": processes()}


# The data ------------------------------------------------------------------------------------

def read_data(options: TrainOptions) -> Dataset:
    try:
        dataset = load_dataset(options.data, excited=options.excited, label_map=options.label_map)
    except DataError as error:
        raise TrainError(str(error)) from None
    unknown = [s for s in dataset.skipped if s.reason == "unknown label"]
    if unknown:
        spellings = {}
        for row in unknown:
            spellings.setdefault(row.label, []).append(row.source)
        listed = "; ".join(f"{label!r}: {len(rows)} rows ({', '.join(rows[:2])}{', ...' if len(rows) > 2 else ''})"
                           for label, rows in spellings.items())
        raise TrainError(f"{options.data}: labels that are none of {', '.join(LABELS)} and have no mapping: {listed}. "
                         f"Say what each means with --map LABEL=TARGET (TARGET one of {', '.join(LABELS)}, or drop "
                         f"to leave it out), e.g. --map excited=happy --map frustrated=angry --map calm=neutral")
    problems = [s for s in dataset.skipped if not s.by_design]
    for row in problems:
        print(row.line(), flush=True)
    if not dataset.utterances:
        raise TrainError(f"{options.data}: no usable utterance ({dataset.skipped_reasons() or 'no rows'})")
    return dataset


def model_builder(options: TrainOptions) -> ModelBuilder:
    try:
        return ModelBuilder(options.preset, options.sources, options.checkpoint, options.seed)
    except ModelError as error:
        flags = f"--preset {options.preset}" + (f" --checkpoint {options.checkpoint}" if options.checkpoint else "")
        raise TrainError(f"{flags}: {error}") from None


def prepare(options: TrainOptions, builder: ModelBuilder, dataset: Dataset, tokenizer):
    """(clips by utterance id, skipped rows, seconds): every utterance read once, with its transcript."""
    started = time.perf_counter()
    asr = ServedASR(builder, options.cache, tokenizer)
    clips, skipped = survey(dataset.utterances, options.max_seconds, asr, tokenizer)
    return {id(clip.utterance): clip for clip in clips}, skipped, time.perf_counter() - started


def run(options: TrainOptions) -> dict:
    """Train on every split (one, or one per fold); training.json's content (of the folds: a summary)."""
    start_processes(options.device)
    dataset = read_data(options)
    splits = make_splits(dataset.utterances, dataclasses.replace(options.split, seed=options.seed))
    if is_first_process():
        for split in splits:
            print(f"{split.name}: {split.how}", flush=True)
    builder = model_builder(options)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = tokenizer_for(builder, Path(scratch))
    clips, skipped, survey_seconds = on_first_process(lambda: prepare(options, builder, dataset, tokenizer))
    # the utterances on the other processes are their own copies: find clips by position
    by_position = _by_position(dataset, clips)
    dataset.skipped += skipped
    empty_ids = tokenizer.tokenize([""])[0][0]
    reports = []
    for split in splits:
        out = options.out / split.name if len(splits) > 1 else options.out
        reports.append(train_split(options, builder, dataset, split, by_position, empty_ids, out, survey_seconds))
    if len(splits) == 1:
        return reports[0]
    folds = summary.folds_summary(options, reports)
    if is_first_process():
        files.write_json(options.out / TRAINING_JSON, folds)
    return folds


def _by_position(dataset: Dataset, clips: dict) -> dict:
    """id(utterance) -> clip, for this process's utterance objects (clips were found on the first)."""
    if processes() == 1:
        return clips
    keyed = {(clip.utterance.id, str(clip.utterance.path)): clip for clip in clips.values()}
    return {id(u): keyed[(u.id, str(u.path))] for u in dataset.utterances if (u.id, str(u.path)) in keyed}


# One split -----------------------------------------------------------------------------------

def usable_parts(options: TrainOptions, split: Split, clips: dict) -> tuple[dict[str, list[Clip]], list[Skipped]]:
    """The split's clips per part (its skipped files left out), checked again for every class."""
    parts, skipped = {}, []
    for part in PARTS:
        parts[part] = []
        for utterance in split.part(part):
            clip = clips.get(id(utterance))
            if clip is None:
                continue
            if options.text == "reference" and part != "test" and clip.reference_ids is None:
                skipped.append(skip(utterance, "no reference text", "--text reference trains on the data's text"))
                continue
            parts[part].append(clip)
    check_split(Split(split.name, *[[c.utterance for c in parts[p]] for p in PARTS], split.speaker_independent,
                      split.how))
    return parts, skipped


def open_progress(out: Path, options: TrainOptions) -> dict:
    """progress.json of the run in `out`: new, or (--resume) the last complete epoch's."""
    path = out / RESUME / PROGRESS
    settings = json.loads(json.dumps(options.settings()))
    if not path.is_file():
        if options.resume and is_first_process():
            print(f"--resume: nothing to resume in {out}: starting there", flush=True)
        return {"settings": settings, "epochs": []}
    progress = json.loads(path.read_text())
    if not options.resume:
        raise TrainError(f"{out} holds a training run ({len(progress['epochs'])} epochs done): go on with --resume, "
                         f"or give another --out")
    differ = sorted(key for key in settings.keys() | progress["settings"].keys()
                    if settings.get(key) != progress["settings"].get(key))
    if differ:
        raise TrainError(f"--resume: the run in {out} was made with other {', '.join(differ)} than now: resume with "
                         f"the same command, or give another --out")
    if is_first_process():
        for partial in files.partial_files(out) + files.partial_files(out / RESUME):
            partial.unlink(missing_ok=True)
        done = {e["checkpoint"] for e in progress["epochs"]}
        for stale in out.glob("hubert_epoch_*_valacc_*.pt"):  # an epoch written after its progress was not
            if stale.name not in done and _epoch_of(stale) > max((e["epoch"] for e in progress["epochs"]), default=0):
                stale.unlink()
    return progress


def _epoch_of(path: Path) -> int:
    return int(path.name.split("_")[2])


def finished(progress: dict, recipe: Recipe) -> bool:
    """Whether the epochs are over: all of them, or early stopping's patience was spent."""
    epochs = progress["epochs"]
    if progress.get("trained"):
        return True
    if not epochs:
        return False
    return epochs[-1]["epoch"] >= recipe.epochs or epochs[-1]["epoch"] - progress["best_epoch"] >= recipe.patience


def train_split(options: TrainOptions, builder: ModelBuilder, dataset: Dataset, split: Split, clips: dict,
                empty_ids: np.ndarray, out: Path, survey_seconds: float) -> dict:
    progress = open_progress(out, options)
    if progress.get("complete"):
        return json.loads((out / TRAINING_JSON).read_text())
    parts, skipped = usable_parts(options, split, clips)
    recipe = options.recipe
    if len(parts["train"]) < recipe.batch_size:
        raise TrainError(f"{split.name}: {len(parts['train'])} training clips, fewer than one batch "
                         f"({recipe.batch_size}): give --batch-size {len(parts['train'])} or less, or more data")
    model = ResearchModel.build(builder, recipe.encoder_dropout, recipe.spec_augment)
    model.freeze(not recipe.train_acoustic_encoder, recipe.text_branch)
    if recipe.class_balanced:
        model.set_class_weights(class_weights([LABELS.index(c.utterance.label) for c in parts["train"]], len(LABELS)))
    features, cache_seconds = None, None
    if recipe.cached_features:
        started = time.perf_counter()
        texts = [(c, c.input_ids(options.text)) for c in parts["train"] + parts["validation"]]
        texts += [(c, c.transcript_ids) for c in parts["test"]]
        model.to(options.device)  # the encoders run where training will
        folder = on_first_process(lambda: build_cache(model, texts, empty_ids, options.cache).folder)
        features, cache_seconds = FeatureCache(folder), time.perf_counter() - started
    sets = {"train": ClipDataset(parts["train"], options.text, empty_ids, recipe.crop_seconds, recipe.text_dropout,
                                 options.seed, features, recipe.noise, recipe.speed),
            "validation": ClipDataset(parts["validation"], options.text, empty_ids, features=features),
            "test": ClipDataset(parts["test"], "asr", empty_ids, features=features)}
    trainer = make_trainer(model, recipe, out, options.seed, options.device, sets["train"], sets["validation"],
                           progress, options.keep_all_epochs, epoch_audio_seconds(parts["train"], recipe), split.name)
    if not finished(progress, recipe):
        last = progress.get("last_checkpoint")
        trainer.train(resume_from_checkpoint=str(out / RESUME / last) if last else None)
    progress["trained"] = True
    if is_first_process():
        files.write_json(out / RESUME / PROGRESS, progress)
    model.load_state_dict(safetensors.torch.load_file(out / RESUME / progress["best_resume_checkpoint"]
                                                      / "model.safetensors"), strict=False)
    validation = trainer.predict(sets["validation"]).predictions.astype(np.float64)
    validation_labels = np.array([LABELS.index(c.utterance.label) for c in parts["validation"]])
    temperature = calibration.fit_temperature(validation, validation_labels)
    with torch.no_grad():
        model.fc.weight /= temperature
        model.fc.bias /= temperature
    best = out / progress["best_checkpoint"]
    if is_first_process():
        files.save_tensors(best, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    test = trainer.predict(sets["test"]).predictions.astype(np.float64)
    report_data = summary.build_report(options, builder, dataset, split, parts, skipped, progress, best, temperature,
                               validation, test, {"survey_seconds": survey_seconds, "cache_seconds": cache_seconds})
    if is_first_process():
        report.write(out, report_data, parts["test"], test)
        progress["complete"] = True
        files.write_json(out / RESUME / PROGRESS, progress)
    return report_data


def epoch_audio_seconds(clips: list[Clip], recipe: Recipe) -> float:
    """Seconds of audio one epoch trains on (crops, and the whole batches it takes)."""
    seconds = [min(c.seconds, recipe.crop_seconds) if recipe.crop_seconds else c.seconds for c in clips]
    used = (len(clips) // recipe.batch_size) * recipe.batch_size
    return float(np.sum(seconds) * used / len(clips))
