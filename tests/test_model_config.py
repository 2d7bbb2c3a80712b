"""core.model_config, the one reader of config.pbtxt: what the export writes reads back, from a file
or its model folder; a broken config is a clear error, and the edge turns it into what to do."""

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from ser_triton.core.model_config import CONFIG_FILE, read_config
from ser_triton.core.specs import AUDIO_INPUT
from ser_triton.export.repository import write_config
from ser_triton.serving.edge import served_audio_seconds
from ser_triton.serving.steps.parameters import MAX_AUDIO_SECONDS
from ser_triton.serving.supervisor import ServerError


def audio_config(seconds: str) -> mc.ModelConfig:
    config = mc.ModelConfig(name=AUDIO_INPUT, backend="python", max_batch_size=8)
    config.parameters[MAX_AUDIO_SECONDS].string_value = seconds
    return config


def test_what_the_export_writes_reads_back_from_the_file_or_its_folder(tmp_path):
    write_config(audio_config("12.5"), tmp_path / AUDIO_INPUT)
    from_file = read_config(tmp_path / AUDIO_INPUT / CONFIG_FILE)
    assert from_file == read_config(tmp_path / AUDIO_INPUT) == audio_config("12.5")
    assert served_audio_seconds(tmp_path) == 12.5  # the edge's bound comes from the same reader


def test_a_broken_config_names_its_file(tmp_path):
    (tmp_path / AUDIO_INPUT).mkdir()
    broken = tmp_path / AUDIO_INPUT / CONFIG_FILE
    broken.write_text("name: 'audio_input'\nmax_batch_size: eight\n")
    with pytest.raises(ValueError, match=f"{broken} is not a Triton model config"):
        read_config(broken)
    with pytest.raises(ServerError, match="cannot read the ensemble's audio limit .* re-export the repository"):
        served_audio_seconds(tmp_path)
    with pytest.raises(ServerError, match="re-export"):  # no config at all
        served_audio_seconds(tmp_path / "elsewhere")
