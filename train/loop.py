"""The training loop: transformers' Trainer, with the data, the metrics and the files of ser-train.

The Trainer runs the epochs, AdamW and the schedule, bf16 autocast on a GPU, DDP under torchrun
(gloo on CPUs), early stopping on validation UA (its EarlyStoppingCallback) and its own resumable
checkpoints (`OUT/resume/checkpoint-N`: weights, optimizer, scheduler, RNG states). Around it:
- `EpochFiles` writes, after each epoch's checkpoint is complete, the research checkpoint
  `OUT/hubert_epoch_{e}_valacc_{wa}.pt` (validation WA in percent) and then `OUT/resume/progress.json`,
  the record that says which epoch is complete; --resume starts from there, so a kill at any moment
  leaves the last complete epoch usable. Trainer checkpoints other than the last and the best go.
- `Progress`: one tqdm bar with the loss and validation UA, and a line per epoch.
- Every optimizer step sees a whole global batch (the last partial one is dropped), and the loss is
  the mean over the batch of each clip's (class-weighted) loss, so N processes with batch B / N give
  one process's steps with batch B.
"""

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import transformers
from tqdm import tqdm
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ser_triton.evaluation.metrics import accuracies, confusion_matrix, per_class_scores
from ser_triton.train import files
from ser_triton.train.batches import collate
from ser_triton.train.recipes import Recipe

RESUME = "resume"
PROGRESS = "progress.json"
METRIC = "ua"


def checkpoint_name(epoch: int, validation_wa: float) -> str:
    """The research code's file name: hubert_epoch_{epoch}_valacc_{accuracy in percent, 2 decimals}.pt."""
    return f"hubert_epoch_{epoch}_valacc_{100 * validation_wa:.2f}.pt"


def scores(predictions) -> dict:
    """WA, UA and macro-F1 of an EvalPrediction (logits and label ids), as ser-evaluate scores them."""
    logits, labels = predictions.predictions, predictions.label_ids
    confusion = confusion_matrix(np.asarray(labels, dtype=np.int64), np.asarray(logits).argmax(-1))
    wa, ua = accuracies(confusion)
    f1s = [s["f1"] for s in per_class_scores(confusion).values() if s["f1"] is not None]
    return {"wa": float(wa), "ua": float(ua), "macro_f1": float(np.mean(f1s)) if f1s else 0.0}


def arguments(recipe: Recipe, out: Path, seed: int, device: str, processes: int) -> TrainingArguments:
    if recipe.batch_size % processes:
        raise ValueError(f"batch size {recipe.batch_size} is not a multiple of the {processes} processes")
    return TrainingArguments(
        output_dir=str(out / RESUME),
        per_device_train_batch_size=recipe.batch_size // processes,
        per_device_eval_batch_size=max(1, recipe.batch_size // processes),
        learning_rate=recipe.learning_rate, weight_decay=recipe.weight_decay, optim="adamw_torch",
        num_train_epochs=recipe.epochs, lr_scheduler_type=recipe.scheduler,
        warmup_steps=recipe.warmup_ratio,  # below 1: a share of the steps
        max_grad_norm=recipe.max_grad_norm if recipe.max_grad_norm is not None else 0.0,
        eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
        metric_for_best_model=METRIC, greater_is_better=True, load_best_model_at_end=False,
        seed=seed, data_seed=seed,
        use_cpu=device == "cpu", bf16=device == "cuda",
        ddp_backend=("gloo" if device == "cpu" else "nccl") if processes > 1 else None,
        dataloader_num_workers=0, remove_unused_columns=False, label_names=["labels"],
        report_to="none", disable_tqdm=True, log_level="error", log_level_replica="error",
        restore_callback_states_from_checkpoint=True,
    )


class SERTrainer(Trainer):
    def get_train_dataloader(self):
        """Whole global batches only: DDP would fill a last partial batch with repeated clips."""
        self.args.dataloader_drop_last = True
        try:
            return super().get_train_dataloader()
        finally:
            self.args.dataloader_drop_last = False

    def _save(self, output_dir=None, state_dict=None):
        """Resume checkpoints hold what trains: frozen encoders come from the model's sources again."""
        model = self.accelerator.unwrap_model(self.model)
        trained = {name for name, p in model.named_parameters() if p.requires_grad}
        state = state_dict if state_dict is not None else model.state_dict()
        frozen_modules = [m for m in ("hubert.", "bert.") if not any(n.startswith(m) for n in trained)]
        state = {k: v for k, v in state.items() if not k.startswith(tuple(frozen_modules))}
        super()._save(output_dir, state_dict=state)


class EpochFiles(TrainerCallback):
    """After each saved epoch: its research checkpoint, then progress.json (the commit point)."""

    def __init__(self, out: Path, progress: dict, keep_all_epochs: bool, audio_seconds_per_epoch: float):
        self.out, self.progress, self.keep_all = out, progress, keep_all_epochs
        self.audio_seconds = audio_seconds_per_epoch
        self.started = self.evaluation = self.log = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.train_seconds = time.perf_counter() - self.started

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.log = dict(logs)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.evaluation = dict(metrics or {})

    def on_save(self, args, state, control, model=None, **kwargs):
        """Every process keeps the record; the first writes the files."""
        epoch = int(round(state.epoch))
        wa = self.evaluation["eval_wa"]
        name = checkpoint_name(epoch, wa)
        entry = {"epoch": epoch, "step": state.global_step, "checkpoint": name,
                 "train_loss": (self.log or {}).get("loss"), "learning_rate": (self.log or {}).get("learning_rate"),
                 "validation_loss": self.evaluation.get("eval_loss"), "validation_wa": wa,
                 "validation_ua": self.evaluation["eval_ua"], "validation_macro_f1": self.evaluation["eval_macro_f1"],
                 "train_seconds": round(self.train_seconds, 3), "audio_seconds": round(self.audio_seconds, 3),
                 "audio_seconds_per_second": round(self.audio_seconds / self.train_seconds, 3)}
        epochs = [e for e in self.progress.get("epochs", []) if e["epoch"] < epoch] + [entry]
        best = max(epochs, key=lambda e: (e["validation_ua"], -e["epoch"]))
        self.progress.update(epochs=epochs, last_checkpoint=f"checkpoint-{state.global_step}",
                             best_epoch=best["epoch"], best_checkpoint=best["checkpoint"],
                             best_resume_checkpoint=f"checkpoint-{best['step']}")
        if state.is_world_process_zero:
            files.save_tensors(self.out / name, {k: v.detach().cpu() for k, v in model.state_dict().items()})
            files.write_json(self.out / RESUME / PROGRESS, self.progress)
            self.prune(epochs, best)

    def prune(self, epochs: list[dict], best: dict) -> None:
        """Trainer checkpoints other than the last and best; research files other than the best (and all
        epochs' with --keep-all-epochs); what a killed write left."""
        keep = {self.progress["last_checkpoint"], self.progress["best_resume_checkpoint"]}
        for folder in (self.out / RESUME).glob("checkpoint-*"):
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
        if not self.keep_all:
            for entry in epochs:
                if entry["checkpoint"] != best["checkpoint"]:
                    (self.out / entry["checkpoint"]).unlink(missing_ok=True)


class EpochSeed(TrainerCallback):
    """Tells the training clips which epoch it is (their crops and text dropout depend on it): under DDP,
    Accelerate tells the batch sampler and not the dataset."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(round(state.epoch or 0)))


class Progress(TrainerCallback):
    """A tqdm bar over the optimizer steps, with the epoch's loss and validation UA; a line per epoch."""

    def __init__(self, name: str):
        self.name, self.bar, self.loss, self.best = name, None, None, None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=f"training {self.name}",
                            unit="step", dynamic_ncols=True, disable=None, file=sys.stderr)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.loss = logs["loss"]
            self.bar.set_postfix(loss=f"{self.loss:.3f}")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.bar is None or not metrics or "eval_ua" not in metrics:
            return
        ua = metrics["eval_ua"]
        if self.best is None or ua > self.best[0]:
            self.best = (ua, int(round(state.epoch)))
        self.bar.set_postfix(loss=f"{self.loss:.3f}" if self.loss is not None else "-", val_ua=f"{ua:.3f}")
        self.bar.write(f"{self.name} epoch {int(round(state.epoch))}: loss {self.loss:.4f}, validation UA {ua:.3f} "
                       f"WA {metrics['eval_wa']:.3f} (best UA {self.best[0]:.3f}, epoch {self.best[1]})",
                       file=sys.stderr)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


def make_trainer(model, recipe: Recipe, out: Path, seed: int, device: str, train_set, validation_set,
                 progress: dict, keep_all_epochs: bool, audio_seconds_per_epoch: float, name: str) -> SERTrainer:
    transformers.logging.set_verbosity_error()
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's
    trainer = SERTrainer(model=model, args=arguments(recipe, out, seed, device, processes),
                         train_dataset=train_set, eval_dataset=validation_set, data_collator=collate,
                         compute_metrics=scores,
                         callbacks=[EarlyStoppingCallback(early_stopping_patience=recipe.patience),
                                    EpochFiles(out, progress, keep_all_epochs, audio_seconds_per_epoch),
                                    EpochSeed(train_set), Progress(name)])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer
