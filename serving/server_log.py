"""Why a server did not start, read from its log: the models that failed and their first line."""

import re
from pathlib import Path

FAILED_MODEL = re.compile(r"failed to load '([^']+)' version \d+: (.*)")

STDOUT = Path("-")
"""The log path that means "the launcher's standard output" (containers log there)."""


def name(log_path: Path) -> str:
    return "standard output" if Path(log_path) == STDOUT else str(log_path)


def read(path: Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def failure_reason(headline: str, log_path: Path) -> str:
    if Path(log_path) == STDOUT:
        return f"{headline}: the reason is in the server's log above (standard output)"
    text = read(log_path)
    failures = {}
    for model, reason in FAILED_MODEL.findall(text):
        failures.setdefault(model, reason.split("\\n")[0].strip())  # drop the Python traceback
    if failures:
        details = "; ".join(f"model '{m}' failed to load: {r}" for m, r in failures.items())
        return f"{headline}: {details} (full log: {log_path}; re-export with `make export`)"
    tail = "\n".join(text.strip().splitlines()[-15:])
    return f"{headline}. Last lines of the log ({log_path}):\n{tail}"
