"""`ser-train` / `make train`: labelled speech -> the research checkpoint that `make export` serves.

    ser-train DATA --preset tiny --test-speakers A,B --out DIR
    ser-train IEMOCAP_full_release --test-sessions 5                      # pretrained, frozen recipe on a CPU
    ser-train IEMOCAP_full_release --folds sessions --device cuda         # leave-one-session-out, research recipe
    ser-train ravdess/manifest.csv --preset tiny --map calm,fearful,disgust,surprised=drop \\
        --test-speakers actor19,actor20,actor21,actor22,actor23,actor24
    torchrun --nproc-per-node 2 -m ser_triton.train DATA ...               # DDP (gloo on CPUs)

DATA is what ser-evaluate reads: a manifest (path,label[,text,speaker,session]) or the IEMOCAP
release folder. Writes into --out (default checkpoints/): the best epoch's research checkpoint
hubert_epoch_{e}_valacc_{validation WA}.pt (calibrated), training.json, test_predictions.jsonl,
test_split.csv, curves.png, confusion.png, MODEL_CARD.md, and resume/ (the optimizer's and the
Trainer's state). Then: make export PRESET=... CHECKPOINT=<best checkpoint>;
make evaluate DATA=<out>/test_split.csv gives the same answers as test_predictions.jsonl.
This module only parses and prints; the work is train.session.
"""

import argparse
import logging
import sys
from pathlib import Path

from ser_triton.core.cli import positive
from ser_triton.core.contract import CLIENT_WINDOW_SECONDS
from ser_triton.evaluation.datasets import DataError, parse_label_map
from ser_triton.model.sources import add_model_arguments, sources_from_args
from ser_triton.train.allocator import keep_freed_memory
from ser_triton.train.errors import TrainError
from ser_triton.train.recipes import KNOBS, RECIPES, default_recipe
from ser_triton.train.session import TrainOptions, default_cache, is_first_process, run
from ser_triton.train.splits import SplitOptions, names
from ser_triton.train.transcripts import TEXT_SOURCES

PROG = "ser-train"


def optional(kind):
    """An argparse type: `kind`, or none."""
    def parse(text: str):
        return None if text.strip().lower() == "none" else kind(text)
    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", metavar="DATA", help="a manifest (.csv, .tsv, .jsonl) or an IEMOCAP release folder")
    parser.add_argument("--out", type=Path, default=Path("checkpoints"), help="output folder (default checkpoints/)")
    add_model_arguments(parser, aliases=False, seed_help="seed of the random presets, the split's random choices, "
                                                         "the crops and the training (default 0)")
    split = parser.add_argument_group("split (by speaker, never by clip)")
    split.add_argument("--test-speakers", metavar="A,B", help="the test split's speakers")
    split.add_argument("--test-sessions", metavar="N[,M]", help="the test split: these sessions' speakers")
    split.add_argument("--val-speakers", metavar="C,D",
                       help="validation speakers, held out of training (default: a seeded 20%% of them, printed)")
    split.add_argument("--folds", metavar="sessions|K",
                       help="leave-one-session-out, or K speaker folds: a model per fold, mean and std over them")
    split.add_argument("--split", choices=("speakers", "research"), default="speakers",
                       help="research: IEMOCAP's research split (Session 2 test, a random 20%% of the other clips as "
                            "validation): SPEAKER-DEPENDENT validation, only to compare with the research numbers")
    data = parser.add_argument_group("data")
    data.add_argument("--map", action="append", metavar="LABEL=TARGET",
                      help="what the data's other labels mean: a served label, or drop (left out, counted); e.g. "
                           "--map excited=happy --map frustrated=angry --map calm=neutral")
    data.add_argument("--excited", choices=("happy", "drop"), default="happy",
                      help="IEMOCAP's exc: merged into happy (default, the research setup) or left out")
    data.add_argument("--text", choices=TEXT_SOURCES, default="asr",
                      help="what the text branch trains on: asr, the served ASR's transcript (default), or "
                           "reference, the data's text (the test split is still scored on transcripts, as served)")
    data.add_argument("--max-seconds", type=positive(float, "seconds"), default=CLIENT_WINDOW_SECONDS,
                      help=f"longer files are skipped (default {CLIENT_WINDOW_SECONDS:g}: what one client request "
                           f"holds)")
    training = parser.add_argument_group("recipe (docs/training.md)")
    training.add_argument("--recipe", choices=sorted(RECIPES),
                          help="default: research with --device cuda; on a CPU frozen for the pretrained preset and "
                               "scratch for the random ones. " + "; ".join(f"{r.name}: {r.summary}"
                                                                            for r in RECIPES.values()))
    for knob in KNOBS:
        flag = "--" + knob.name.replace("_", "-")
        if knob.type in (bool, "bool"):
            training.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=knob.metadata["help"])
        else:
            training.add_argument(flag, type=_knob_type(knob), default=None, metavar="X", help=knob.metadata["help"])
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                           help="cpu (fp32), or cuda (bf16 autocast)")
    run_group.add_argument("--resume", action="store_true", help="go on from the last complete epoch in --out")
    run_group.add_argument("--keep-all-epochs", action="store_true",
                           help="keep every epoch's checkpoint, as the research code does (default: the best only)")
    run_group.add_argument("--cache", type=Path, default=None,
                           help=f"the ASR's transcripts and the frozen encoders' outputs (default {default_cache()})")
    run_group.add_argument("--bootstrap", type=positive(int), default=1000, metavar="N",
                           help="bootstrap resamples for the 95%% intervals (default 1000)")
    run_group.add_argument("--threads", type=positive(int), help="PyTorch threads per process (default: all cores)")
    return parser


def _knob_type(knob):
    """int, float or str, or optional(...) of one where the field may be None."""
    text = str(knob.type)
    kind = float if "float" in text else int if "int" in text else str
    return optional(kind) if "None" in text else kind


def options_from(args, argv) -> TrainOptions:
    recipe_name = args.recipe or default_recipe(args.preset, args.device)
    recipe = RECIPES[recipe_name].changed(**{knob.name: getattr(args, knob.name) for knob in KNOBS
                                             if getattr(args, knob.name) is not None})
    if recipe.problems():
        raise TrainError(f"recipe {recipe.name}: " + "; ".join(recipe.problems()))
    try:
        label_map = parse_label_map(args.map)
    except DataError as error:
        raise TrainError(str(error)) from None
    split = SplitOptions(test_speakers=names(args.test_speakers), test_sessions=names(args.test_sessions),
                         val_speakers=names(args.val_speakers), folds=args.folds, research=args.split == "research")
    options = TrainOptions(data=Path(args.data), out=args.out, preset=args.preset, sources=sources_from_args(args),
                           checkpoint=Path(args.checkpoint) if args.checkpoint else None, seed=args.seed,
                           recipe=recipe, split=split, text=args.text, label_map=label_map, excited=args.excited,
                           max_seconds=args.max_seconds, resume=args.resume, device=args.device,
                           keep_all_epochs=args.keep_all_epochs, bootstrap=args.bootstrap, command=[PROG, *argv])
    if args.cache is not None:
        options.cache = args.cache
    if args.recipe is None and is_first_process():
        print(f"{PROG}: recipe {recipe_name} (the default for preset {args.preset} on {args.device}; --recipe to "
              f"choose)", file=sys.stderr)
    return options


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        keep_freed_memory()
        options = options_from(args, argv)
        if args.device == "cuda" and not torch.cuda.is_available():
            raise TrainError("--device cuda: PyTorch sees no CUDA GPU here; train with --device cpu")
        result = run(options)
    except TrainError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the last complete epoch is kept: go on with --resume", file=sys.stderr)
        return 130
    if is_first_process():
        summarise(result)
    return 0


def summarise(result: dict) -> None:
    if "folds" in result:
        for part in ("validation", "test"):
            scores = result[part]
            print(f"{part} over {len(result['folds'])} folds: WA {scores['wa']:.3f} ± {scores['wa_std']:.3f}, "
                  f"UA {scores['ua']:.3f} ± {scores['ua_std']:.3f}, macro-F1 {scores['macro_f1']:.3f}")
        return
    for part in ("validation", "test"):
        scores = result[part]
        print(f"{part}: WA {scores['wa']:.3f} {_interval(scores['wa_ci95'])}, UA {scores['ua']:.3f} "
              f"{_interval(scores['ua_ci95'])}, macro-F1 {scores['macro_f1']:.3f}, ECE "
              f"{scores['calibration']['ece_before']:.3f} -> {scores['calibration']['ece_after']:.3f}")
    if not result["speaker_independent"]:
        print("SPEAKER-DEPENDENT validation (--split research)")
    print(f"best checkpoint: {result['best_checkpoint']} (epoch {result['best_epoch']}); report: "
          f"{Path(result['best_checkpoint']).parent / 'training.json'}")
    print(f"serve it: {result['export']}")


def _interval(bounds) -> str:
    return "" if not bounds or bounds[0] is None else f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


if __name__ == "__main__":
    sys.exit(main())
