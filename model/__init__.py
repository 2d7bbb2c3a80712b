"""The research model in PyTorch: its networks, fusion head, checkpoints and reference pipeline.

`export` turns it into ONNX and a Triton repository; `bench` and the tests use
`model.reference` as the ground truth. Network names: core.glossary.
"""
