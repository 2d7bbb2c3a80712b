"""client/infer.py run as a script, on the failures that need no server; the client imports no ML stack."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_triton.core.contract import SAMPLE_RATE

REPO_ROOT = Path(__file__).resolve().parent.parent
NO_SERVER = ["--url", "127.0.0.1:1", "--timeout", "2", "--retries", "0"]


def cli(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "client/infer.py", *map(str, args)], cwd=REPO_ROOT, input=stdin,
                          capture_output=True, timeout=120)


def errors(run: subprocess.CompletedProcess) -> list[str]:
    text = run.stderr.decode()
    assert "Traceback" not in text
    return text.splitlines()


@pytest.fixture
def speech(tmp_path) -> Path:
    path = tmp_path / "speech.wav"
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 200 * t), SAMPLE_RATE)
    return path


def test_a_missing_file_is_named_with_the_cause(tmp_path):
    run = cli(tmp_path / "missing.wav", *NO_SERVER)
    assert run.returncode == 1  # README: exit 1 when a file fails
    assert errors(run) == [f"{tmp_path / 'missing.wav'}: no such file"]
    assert run.stdout == b""


def test_every_unusable_input_gets_one_line_and_a_failing_exit_code(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "notes.txt").write_text("not audio\n")
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "corrupt.flac").write_bytes(b"fLaC" + bytes(500))
    nan = np.full(SAMPLE_RATE, 0.1, np.float32)
    nan[10] = np.nan
    soundfile.write(tmp_path / "nan.wav", nan, SAMPLE_RATE, subtype="FLOAT")
    inf = np.full(SAMPLE_RATE, 0.1, np.float32)
    inf[10] = np.inf
    soundfile.write(tmp_path / "inf.wav", inf, SAMPLE_RATE, subtype="FLOAT")
    names = ["missing.wav", "empty_dir", "notes.txt", "zero.wav", "corrupt.flac", "nan.wav", "inf.wav"]

    run = cli(*(tmp_path / name for name in names), *NO_SERVER)

    assert run.returncode == 1  # README: exit 1 when a file fails
    lines = errors(run)
    assert len(lines) == len(names)
    causes = {"missing.wav": "no such file", "empty_dir": "no audio files", "notes.txt": "not a readable audio",
              "zero.wav": "not a readable audio", "corrupt.flac": "not a readable audio",
              "nan.wav": "NaN or infinite", "inf.wav": "NaN or infinite"}
    for name, cause in causes.items():
        assert any(line.startswith(f"{tmp_path / name}: ") and cause in line for line in lines), (name, lines)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_down_is_one_clear_line_per_file_without_retries(speech, tmp_path, protocol):
    other = tmp_path / "other.flac"
    soundfile.write(other, soundfile.read(speech)[0], SAMPLE_RATE)
    run = cli(speech, other, *NO_SERVER, "--protocol", protocol)
    assert run.returncode == 1  # README: exit 1 when a file fails
    lines = errors(run)
    assert len(lines) == 2
    for path, line in zip((speech, other), lines):
        assert line.startswith(f"{path}: cannot reach the SER server at 127.0.0.1:1 over {protocol}")
        assert "make serve" in line


def test_a_directory_is_searched_for_audio_files(speech, tmp_path):
    nested = tmp_path / "more" / "deeper"
    nested.mkdir(parents=True)
    soundfile.write(nested / "b.ogg", soundfile.read(speech)[0], SAMPLE_RATE)
    (tmp_path / "more" / "readme.txt").write_text("not audio")
    run = cli(tmp_path, *NO_SERVER)
    names = [line.split(": ")[0] for line in errors(run)]
    assert names == [str(nested / "b.ogg"), str(speech)]


def test_stdin_audio_and_stdin_file_lists(speech, tmp_path):
    run = cli("-", *NO_SERVER, stdin=speech.read_bytes())
    assert [line.split(": ")[0] for line in errors(run)] == ["-"]
    assert "cannot reach the SER server" in run.stderr.decode()

    listing = f"{speech}\n\n{tmp_path / 'missing.wav'}\n".encode()
    run = cli("-", *NO_SERVER, stdin=listing)
    lines = errors(run)
    assert lines[0].startswith(f"{speech}: cannot reach the SER server")
    assert lines[1] == f"{tmp_path / 'missing.wav'}: no such file"

    for garbage in (b"", bytes(range(256))):
        run = cli("-", *NO_SERVER, stdin=garbage)
        assert run.returncode == 1 and len(errors(run)) == 1 and errors(run)[0].startswith("-: stdin")


@pytest.mark.parametrize("args", [
    ["x.wav", "--concurrency", "0"], ["x.wav", "--timeout", "-1"], ["x.wav", "--protocol", "udp"],
    ["-", "x.wav"], ["x.wav", "--url", "https://example:8001"], [],
])
def test_bad_arguments_are_usage_errors(args):
    run = cli(*args)
    assert run.returncode == 2
    assert errors(run)


def test_main_returns_the_exit_code(tmp_path, capsys):
    from ser_triton.client.infer import main

    assert main([str(tmp_path / "missing.wav"), *NO_SERVER]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'missing.wav'}: no such file\n"


def test_the_client_does_not_import_the_ml_stack():
    code = ("import sys, client.library, client.infer; "
            "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
