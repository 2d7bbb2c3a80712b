"""The thin ser-triton client: audio in, emotions out, over Triton gRPC or HTTP (no torch).

`client.library.SERClient` is the library; `python client/infer.py` the command line;
`client.contract` the one place that names the served ensemble's inputs and outputs.
"""
