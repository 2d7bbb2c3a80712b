"""A served model's config.pbtxt, read as Triton's `ModelConfig` protobuf: the one reader.

The export writes every config from core.specs (export/repository.py); the edge, the bench and
the tests read them back here. Triton's own protobuf types come with the thin client's
tritonclient, so this needs nothing optional.
"""

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

CONFIG_FILE = "config.pbtxt"
"""Each model folder's configuration, as Triton names it."""


def read_config(path: Path) -> ModelConfig:
    """The config at `path` (a config.pbtxt, or the model folder that holds one). OSError where it
    cannot be read; ValueError, naming the file, where it is not a model config."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    try:
        return text_format.Parse(path.read_text(), ModelConfig())
    except text_format.ParseError as error:
        raise ValueError(f"{path} is not a Triton model config: {error}") from None
