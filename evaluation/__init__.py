"""Evaluation of a served system on labelled speech: `ser-evaluate`, `make evaluate`.

`datasets` reads manifests and IEMOCAP releases, `systems` runs the served system (and the
research model, with --reference) on them, `metrics` scores the answers, `report` writes them.
"""
