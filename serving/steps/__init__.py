"""Triton Python-backend steps of the `ser` ensemble.

Each model directory's `1/model.py` imports its `TritonPythonModel` from here; export copies
this package next to it, so the model repository is self-contained (`make steps` refreshes the
copies of an existing repository). Steps look their tensors up by role (`backend.Step.read`,
`respond`), from config parameters generated from core.specs. The numpy logic lives in modules
that do not import Triton (batching, ctc, text, runtime), so tests and the export run it directly.
"""
