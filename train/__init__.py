"""ser-train: labelled speech -> the research checkpoint that `make export CHECKPOINT=` serves.

    data (evaluation.datasets) -> splits by speaker (splits) -> clips, read and checked once, with the
    served ASR's transcripts (clips, transcripts) -> the research model (network) trained by
    transformers' Trainer under a recipe (recipes, loop) -> temperature (calibration) -> the test
    split's predictions and training.json, plots, MODEL_CARD.md (report), written atomically (files).

`python -m ser_triton.train` / `ser-train` / `make train` parse the command line (__main__); the work
is `session.run`.
"""
