"""A network on disk: `model.onnx`, and for the networks this export rewrites or quantizes, their
weights next to it in `model.onnx.data` (ONNX external data). ONNX Runtime and `onnx.load` read
both forms; the served step opens `model.onnx` either way.

Why the weights go in a file of their own: writing a whole network as one protobuf message takes
about four times its size in Python (measured: 5.2 GB more for HuBERT-large's 1.2 GB), and ONNX
Runtime maps an external weights file instead of parsing a copy of it. Written this way a network
costs little more than its weights to save or to load.
"""

import shutil
from pathlib import Path

import onnx


def data_file(path: Path) -> Path:
    """Where the weights of the network at `path` go (the network names it, relative to itself)."""
    return path.with_name(path.name + ".data")


def save(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data_file(path).unlink(missing_ok=True)  # onnx appends to an existing weights file
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data_file(path).name)
    share_weights_like_network(path)


def share_weights_like_network(path: Path) -> None:
    """Give the weights file the network file's permissions: onnx creates it readable by its owner
    only, and a server running as another user (the container images) must read both."""
    if data_file(path).exists():
        data_file(path).chmod(path.stat().st_mode & 0o777)


def move(source: Path, destination: Path) -> None:
    """Move a network and its weights file. The weights file's name is written in the network,
    so both paths must end in the same file name (each network version has a folder of its own)."""
    if source.name != destination.name:
        raise ValueError(f"a network keeps its file name when moved: {source.name} -> {destination.name}")
    remove(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, destination)
    if data_file(source).exists():
        shutil.move(data_file(source), data_file(destination))


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    data_file(path).unlink(missing_ok=True)


def size(path: Path) -> int:
    """Bytes on disk of a network: its file and its weights file."""
    return path.stat().st_size + (data_file(path).stat().st_size if data_file(path).exists() else 0)
