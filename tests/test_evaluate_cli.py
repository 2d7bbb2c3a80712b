"""client/evaluate.py run as a script, on the failures that need no server: one line each, no traceback."""

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

LABELLED = REPO_ROOT / "samples" / "labelled.csv"
NO_SERVER = ["--url", "127.0.0.1:1", "--timeout", "2", "--retries", "0"]


def evaluate(*args, code: str | None = None, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    """The CLI; with `code`, that Python first (to hide a module), then main() in the same process."""
    argv = [str(a) for a in args]
    command = [sys.executable, str(REPO_ROOT / "client" / "evaluate.py"), *argv] if code is None else [
        sys.executable, "-c", f"{code}\nimport sys\nfrom client.evaluate import main\nsys.exit(main({argv!r}))"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def error_lines(run: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in run.stderr, run.stderr
    return run.stderr.splitlines()


def test_missing_data_is_one_line(tmp_path):
    run = evaluate(tmp_path / "nothing.csv", *NO_SERVER)
    assert run.returncode == 2
    assert error_lines(run) == [f"{tmp_path / 'nothing.csv'}: no such file or folder: give a manifest "
                                f"(.csv, .tsv, .jsonl) or an IEMOCAP folder"]


def test_unreadable_data_sets_are_one_line(tmp_path):
    (tmp_path / "columns.csv").write_text("file,emotion\nx.wav,sad\n")
    for data, cause in ((tmp_path, "without Session1..Session5"), (tmp_path / "columns.csv", "no path or label column")):
        run = evaluate(data, *NO_SERVER)
        lines = error_lines(run)
        assert run.returncode == 2 and len(lines) == 1 and cause in lines[0], lines


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_down_is_one_line(protocol):
    run = evaluate(LABELLED, *NO_SERVER, "--protocol", protocol)
    assert run.returncode == 1
    lines = error_lines(run)
    assert len(lines) == 1
    assert lines[0].startswith(f"cannot reach the SER server at 127.0.0.1:1 over {protocol}")
    assert "make serve" in lines[0]


def test_no_usable_row_names_each_row_and_the_total(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"path": "gone.wav", "label": "sad"}\n{"path": "gone.wav", "label": "bored"}\n'
                                        "not json\n")
    run = evaluate(tmp_path / "bad.jsonl", *NO_SERVER)
    assert run.returncode == 1
    lines = error_lines(run)
    assert lines[:3] == [
        f"bad.jsonl:1: missing audio file ({tmp_path / 'gone.wav'})",
        "bad.jsonl:2: unknown label ('bored' is none of happy, sad, angry, neutral or their usual spellings)",
        "bad.jsonl:3: malformed row (not JSON (Expecting value))",
    ]
    assert lines[3] == (f"{tmp_path / 'bad.jsonl'}: no usable utterance to evaluate "
                        f"(1 missing audio file; 1 unknown label; 1 malformed row)")
    assert len(lines) == 4


def test_without_the_evaluate_extra_it_says_what_to_install():
    run = evaluate(LABELLED, *NO_SERVER, code="import sys; sys.modules['jiwer'] = None")
    assert run.returncode == 2
    assert error_lines(run) == ["ser-evaluate needs jiwer, which is in its extra: pip install 'ser-triton[evaluate]'"]


def test_reference_without_the_research_code_says_what_to_install():
    run = evaluate(LABELLED, "--reference", *NO_SERVER, code="import sys; sys.modules['torch'] = None")
    assert run.returncode == 2
    lines = error_lines(run)
    assert len(lines) == 1
    assert lines[0].startswith("ser-evaluate: --reference needs the PyTorch research pipeline")
    assert lines[0].endswith("pip install 'ser-triton[export]'")


@pytest.mark.parametrize("args", [
    ["--concurrency", "0"], ["--bootstrap", "-5"], ["--compare-protocol", "http"], ["--protocol", "udp"],
    ["--preset", "tiny"], ["--excited", "maybe"],
])
def test_bad_arguments_are_usage_errors(args):
    run = evaluate(LABELLED, *NO_SERVER, *args)
    assert run.returncode == 2
    assert error_lines(run)[-1].startswith("ser-evaluate: error:")


def test_a_bad_url_is_one_line():
    run = evaluate(LABELLED, "--url", "https://example:8001")
    assert run.returncode == 2
    assert error_lines(run) == ["--url/--compare: give the server as host:port (like 127.0.0.1:8001) or as a "
                                "gRPC target (like dns:///ser-triton-headless:8001), not 'https://example:8001'"]


def test_evaluating_without_reference_imports_no_ml_stack():
    code = ("import sys\nfrom client.evaluate import main\nmain(['samples/labelled.csv', '--url', '127.0.0.1:1', "
            "'--retries', '0'])\nprint(sorted(m for m in ('torch', 'transformers', 'onnxruntime', 'export', 'model') "
            "if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert "cannot reach the SER server" in run.stderr
    assert run.stdout.strip() == "[]"
