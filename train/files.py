"""Files that a kill cannot leave half written: each is written beside its place and renamed into it.

A reader (or `--resume`) sees the old file or the new one, never a part of either: os.replace is
atomic on one file system, and the data is flushed to disk before the rename.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch


def replace_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """write(temporary path) then rename it to `path`; the temporary file goes if write fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")  # keeps the suffix (its format)
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    return replace_atomically(path, lambda temporary: temporary.write_text(text))


def write_json(path: Path, value) -> Path:
    return write_text(path, json.dumps(value, indent=1) + "\n")


def write_jsonl(path: Path, rows) -> Path:
    return write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def save_tensors(path: Path, state: dict) -> Path:
    """torch.save of a state_dict (what the research code writes)."""
    return replace_atomically(path, lambda temporary: torch.save(state, temporary))


def partial_files(folder: Path) -> list[Path]:
    """What a killed write left behind in `folder` (removed on --resume)."""
    return sorted(Path(folder).glob(".*.partial*")) if Path(folder).is_dir() else []
