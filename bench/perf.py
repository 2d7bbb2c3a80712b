"""perf_analyzer runs for the bench: one measurement per concurrency, parsed into numbers.

The binary comes from serving.perf_analyzer (installed by `make setup`).
"""

import csv
import json
import re
import subprocess
from pathlib import Path

from ser_triton.core.contract import AUDIO
from ser_triton.serving.perf_analyzer import PerfAnalyzer, PerfAnalyzerError


def run(analyzer: PerfAnalyzer, model: str, url: str, input_data: Path, concurrency: int, request_count: int,
        csv_path: Path, protocol: str = "grpc", timeout: float = 1800.0) -> dict:
    """One measurement of exactly `request_count` requests at `concurrency`.

    Returns perf_analyzer's CSV row as numbers (latencies in microseconds) plus "requests": each
    request's (latency in seconds, input samples) and "wall_seconds" from the first request sent
    to the last answer, both read from its profile export. (Its own Inferences/Second divides by
    a window rounded up to whole seconds, which is coarse for short runs.)
    """
    profile = csv_path.with_suffix(".profile.json")
    command = [
        str(analyzer.binary), "-m", model, "-u", url, "-i", protocol, "--input-data", str(input_data),
        "--concurrency-range", str(concurrency), "--request-count", str(request_count),
        "--max-threads", str(max(16, concurrency)), "-f", str(csv_path), "--profile-export-file", str(profile),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=analyzer.environment(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PerfAnalyzerError(f"perf_analyzer at concurrency {concurrency} ran past {timeout:.0f} s") from None
    log = csv_path.with_suffix(".log")
    log.write_text(" ".join(command) + "\n\n" + done.stdout + done.stderr)
    if done.returncode != 0 or not csv_path.is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-12:])
        raise PerfAnalyzerError(f"perf_analyzer failed at concurrency {concurrency} (rc {done.returncode}); "
                                f"full output in {log}:\n{tail}")
    try:
        requests = parse_profile(profile)
    finally:
        profile.unlink(missing_ok=True)  # it repeats every request's audio: large
    return parse_csv(csv_path) | parse_output(done.stdout) | requests


def parse_profile(path: Path, input_name: str = AUDIO) -> dict:
    experiment = json.loads(path.read_text())["experiments"][-1]
    sent, answered, requests = [], [], []
    for request in experiment["requests"]:
        if not request.get("response_timestamps"):
            continue
        sent.append(request["timestamp"])
        answered.append(request["response_timestamps"][-1])
        requests.append(((answered[-1] - sent[-1]) / 1e9, len(request["request_inputs"][input_name])))
    if not requests:
        raise PerfAnalyzerError(f"{path}: no answered requests")
    return {"requests": requests, "wall_seconds": (max(answered) - min(sent)) / 1e9}


def parse_output(text: str) -> dict:
    """The client's mean latency (usec), and each composing model's mean batch (inferences per
    execution), from perf_analyzer's report."""
    found = {}
    mean = re.search(r"Client:.*?Avg latency: (\d+) usec", text, re.S)
    if mean:
        found["Avg latency"] = float(mean.group(1))
    batches = {}
    for model, inferences, executions in re.findall(
            r"^\s+(\w+), version: \d+\s+Inference count: (\d+)\s+Execution count: (\d+)", text, re.M):
        if int(executions):
            batches[model] = round(int(inferences) / int(executions), 2)
    found["mean_batch"] = batches
    return found


def parse_csv(path: Path) -> dict:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise PerfAnalyzerError(f"{path} has no measurement")
    row = rows[-1]
    values = {}
    for key, value in row.items():
        try:
            values[key.strip()] = float(value)
        except (TypeError, ValueError):
            values[key.strip()] = value
    return values
