"""Triton Python-backend steps of the `ser` ensemble.

Each model directory's `1/model.py` imports its `TritonPythonModel` from here; export copies
this package next to it, so the model repository is self-contained. The numpy logic lives in
modules that do not import Triton (batching, ctc), so tests run it directly.
"""
