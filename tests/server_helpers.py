"""Raw tritonclient calls, result checks and process checks for the server tests (independent of the
project's client library)."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from ser_triton.core import contract
from ser_triton.serving import processes
from ser_triton.serving.ports import free_port
from ser_triton.serving.supervisor import ready
from tests.conftest import REPO_ROOT

MODULES = {"grpc": grpcclient, "http": httpclient}


def connect(server, protocol: str):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return MODULES[protocol].InferenceServerClient(url)


def infer(client, protocol: str, batch: np.ndarray):
    """[b, n] float32 -> (emotions, probabilities [b, 4], transcripts)."""
    module = MODULES[protocol]
    audio = module.InferInput(contract.AUDIO, list(batch.shape), "FP32")
    audio.set_data_from_numpy(batch)
    outputs = [module.InferRequestedOutput(n) for n in (contract.EMOTION, contract.PROBABILITIES, contract.TRANSCRIPT)]
    result = client.infer(contract.ENSEMBLE, [audio], outputs=outputs)
    emotions = [e.decode() for e in result.as_numpy(contract.EMOTION).reshape(-1)]
    transcripts = [t.decode() for t in result.as_numpy(contract.TRANSCRIPT).reshape(-1)]
    return emotions, result.as_numpy(contract.PROBABILITIES), transcripts


def utterance(seconds: float, seed: int) -> np.ndarray:
    """Speech-like test audio: a few harmonics under a syllable-rate envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(contract.SAMPLE_RATE * seconds)) / contract.SAMPLE_RATE
    pitch = 110 + 60 * rng.random()
    voice = sum(np.sin(2 * np.pi * pitch * k * t + rng.random() * 6) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (3 + 2 * rng.random()) * t)
    return (0.2 * voice * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def assert_same(result, expected, atol: float):
    """Two client Results agree: transcripts, durations, segments, probabilities within atol."""
    assert result.file == expected.file
    assert result.transcript == expected.transcript
    assert result.duration == pytest.approx(expected.duration)
    assert [(s.start, s.end) for s in result.segments] == [(s.start, s.end) for s in expected.segments]
    for got, want in zip(result.segments, expected.segments):
        assert got.transcript == want.transcript
        np.testing.assert_allclose(list(got.probabilities.values()), list(want.probabilities.values()), atol=atol)
    got, want = list(result.probabilities.values()), list(expected.probabilities.values())
    np.testing.assert_allclose(got, want, atol=atol)
    top_two = sorted(want)[-2:]
    if top_two[1] - top_two[0] > 10 * atol:
        assert result.label == expected.label


def ensemble_successes(server) -> int:
    """The ensemble requests one server has answered, from its own inference statistics."""
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        return client.get_inference_statistics(contract.ENSEMBLE).model_stats[0].inference_stats.success.count


def requests_served(servers, before: list[int], total: int) -> list[int]:
    """Each server's new ensemble requests, once the statistics account for all `total` of them."""
    deadline = time.monotonic() + 10  # statistics are recorded just after the responses go out
    while True:
        served = [ensemble_successes(s) - b for s, b in zip(servers, before)]
        if sum(served) >= total or time.monotonic() > deadline:
            return served
        time.sleep(0.1)


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return b"zombie" not in status.read_bytes().lower()
    except OSError:
        return False


def descendants(pid: int) -> dict[int, str]:
    """pid -> command name, for every process below `pid` (children, their children, ...)."""
    parents = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        parents[int(status.parent.name)] = (int(re.search(r"PPid:\s+(\d+)", text).group(1)),
                                            re.search(r"Name:\s+(\S+)", text).group(1))
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, name) in parents.items():
            if ppid == parent and child not in found:
                found[child] = name
                frontier.append(child)
    return found


def eventually(condition, seconds: float = 30.0) -> bool:
    """Whether `condition()` comes true within `seconds` (polled; a bound, not a timing check)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def free_ports() -> dict[str, int]:
    return {name: free_port() for name in ("http", "grpc", "metrics")}


def launcher_command(repository: Path, ports: dict[str, int], *extra: str) -> list[str]:
    return [sys.executable, "-m", "ser_triton.serving.launcher", "--repository", str(repository), "--timeout", "60",
            *(f"--{name}-port={port}" for name, port in ports.items()), *extra]


def start_launcher(repository: Path, ports: dict[str, int], *extra: str, **popen) -> tuple[subprocess.Popen, str]:
    """A launcher that has said it is ready, and what it said (it gives up by itself after its --timeout)."""
    launcher = subprocess.Popen(launcher_command(repository, ports, *extra), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, **popen)
    said = []
    while not (said and said[-1].startswith("ready:")):
        line = launcher.stdout.readline()
        assert line, "".join(said)  # it exited without being ready
        said.append(line)
    assert ready(f"127.0.0.1:{ports['http']}", tls="--tls-certificate" in extra)
    return launcher, "".join(said)


def end(launcher: subprocess.Popen, family: dict[int, str]) -> None:
    """Whatever a failed test left running: the launcher and every process below it."""
    if launcher.poll() is None:
        launcher.kill()
        launcher.wait()
    for pid in family:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)




class PeakMemory:
    """How far each process's resident memory rose above where it was at the start, at its peak (MiB):
    the peaks (VmHWM) are reset at the start, so a body buffered and freed meanwhile still shows."""

    def __init__(self, pids: dict[int, str]):
        self.names = {pid: name for pid, name in pids.items() if alive(pid)}
        self.before = {}
        for pid in self.names:
            processes.reset_peak(pid)
            self.before[pid] = processes.memory_mib(pid)["rss_mib"]

    def growth(self) -> dict[str, int]:
        """'name pid' -> MiB the peak rose above the start, for the processes still alive."""
        return {f"{name} {pid}": processes.memory_mib(pid)["peak_rss_mib"] - self.before[pid]
                for pid, name in self.names.items() if alive(pid)}


def requests_served_by(http_url: str, model: str) -> int:
    """The requests `model` has answered, from the statistics the server (or its edge) at http_url gives."""
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=10) as reply:
        return json.load(reply)["model_stats"][0]["inference_stats"]["success"]["count"]


def answers_across_a_stop(http_url: str, grpc_url: str, audios: list, stop) -> tuple[list, int]:
    """Each audio sent at once, on a client of its own (gRPC and HTTP in turn), to the server or edge at
    these addresses; `stop()` is called once the server has taken every request (its first step ran
    each) and not answered them all. Returns each request's answer (emotions, probabilities,
    transcripts), its exception, or None where none came within 3 minutes, in order; and how many
    were answered after stop() began: the requests in flight at the stop."""
    first_step = "audio_input"
    taken, answered = requests_served_by(http_url, first_step), requests_served_by(http_url, contract.ENSEMBLE)
    results, finished = [None] * len(audios), [None] * len(audios)

    def send(index: int) -> None:
        protocol = ("grpc", "http")[index % 2]
        client = (grpcclient.InferenceServerClient(grpc_url) if protocol == "grpc"
                  else httpclient.InferenceServerClient(http_url, connection_timeout=180, network_timeout=180))
        try:
            results[index] = infer(client, protocol, audios[index][None])
        except Exception as error:  # noqa: BLE001 - what the client got is the result
            results[index] = error
        finished[index] = time.monotonic()

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(len(audios))]
    for thread in threads:
        thread.start()
    assert eventually(lambda: requests_served_by(http_url, first_step) >= taken + len(audios), 120), \
        "the server did not take every request"
    assert requests_served_by(http_url, contract.ENSEMBLE) < answered + len(audios), \
        "every request was answered before the stop: send longer audio"
    stopped = time.monotonic()
    stop()
    for thread in threads:
        thread.join(180)
    return results, sum(1 for at in finished if at is not None and at > stopped)
