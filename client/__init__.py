"""The thin ser-triton client: audio in, emotions out, over Triton gRPC or HTTP (no torch).

`ser_triton.client.library.SERClient` is the library; `python client/infer.py` (`ser-infer`) the
command line; `ser_triton.core.contract` names the served ensemble's inputs and outputs.
"""
