"""The probe of a server that runs without the launcher's watchdog (the GPU image, KServe).

    python -m ser_triton.serving.health [--url 127.0.0.1:8000] [--live]

Exit 0 where the server says it is ready (with --live: alive) and every Python-backend step still
has its stub process; else exit 1 with one line saying what is wrong. The GPU image's HEALTHCHECK
and the GPU pods' and KServe's readiness and liveness probes run it (exec probes): readiness takes
the pod out of the Services, liveness restarts its container.

Why more than Triton's health endpoints: measured on the bundled Triton 2.51 with
`--model-control-mode=none`, after a step's stub process dies (a crash, the OOM killer),
/v2/health/ready, /v2/health/live and /v2/models/<step>/ready all still answer 200, before and after
requests, while every request through that step fails with "Stub process '<instance>' is not
healthy", and nothing loads the step again. So the probe finds the server that listens on --url
(the tritonserver process whose --http-port it is), reads which served models run on the Python
backend from their configs (open metadata: the same for repositories in object storage), and
looks for each one's stub among that server's child processes, as the launcher's watchdog does.
Standard library only (a probe runs every few seconds).
"""

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ser_triton.core.contract import ENSEMBLE, HTTP_PORT, STREAM
from ser_triton.serving import processes

SERVED_MODELS = (ENSEMBLE, STREAM)
"""The models clients call; the probe follows an ensemble into its steps."""

TIMEOUT_SECONDS = 4.0
"""Per request: below the probes' timeoutSeconds (5)."""


class Unhealthy(Exception):
    """What is wrong, in one line."""


def get(url: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{url}{path}", timeout=TIMEOUT_SECONDS) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError as error:
        raise Unhealthy(f"no answer from the server at {url} ({getattr(error, 'reason', error)})") from None


def http_port(arguments: list[str]) -> int:
    """The HTTP port a tritonserver command line listens on (--http-port=N or --http-port N; else 8000)."""
    for index, argument in enumerate(arguments):
        if argument.startswith("--http-port="):
            return int(argument.partition("=")[2])
        if argument == "--http-port" and index + 1 < len(arguments):
            return int(arguments[index + 1])
    return HTTP_PORT


def server_pid(port: int) -> int:
    """The tritonserver process whose HTTP port is `port` (in a container: the only one)."""
    for pid in processes.every_process():
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if Path(arguments[0]).name == "tritonserver" and http_port(arguments) == port:
            return pid
    raise Unhealthy(f"no tritonserver process listens on HTTP port {port}")


def python_models(url: str) -> set[str]:
    """The loaded models among those served and the steps of the served ensembles that run on the
    Python backend: a model still loading has no stub yet, and is not ready (liveness passes meanwhile)."""
    found, pending, seen = set(), list(SERVED_MODELS), set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        status, body = get(url, f"/v2/models/{model}/config")
        if status != 200:
            continue  # not loaded (yet: the server is not ready, which the probe says first) or not exported
        config = json.loads(body)
        if config.get("backend") == "python":
            found.add(model)
        pending += [step["model_name"] for step in config.get("ensemble_scheduling", {}).get("step", [])]
    return found


def check(url: str, live: bool = False) -> str:
    """What the probe says when all is well; Unhealthy where not."""
    path = "/v2/health/live" if live else "/v2/health/ready"
    status, _ = get(url, path)
    if status != 200:
        raise Unhealthy(f"{path} answers HTTP {status}: the server is not {'alive' if live else 'ready'}")
    port = int(url.rpartition(":")[2])
    running = set(processes.stubs(server_pid(port)).values())
    dead = sorted(python_models(url) - running)
    if dead:
        raise Unhealthy(f"the Python step{'s' if len(dead) > 1 else ''} {', '.join(repr(m) for m in dead)} "
                        "lost its stub process (a crash or the OOM killer): every request through it fails "
                        "until the server restarts")
    return f"{'alive' if live else 'ready'}, every Python step has its stub process"


def parse_arguments(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ser_triton.serving.health", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=f"127.0.0.1:{HTTP_PORT}", help="the server's HTTP address, host:port")
    parser.add_argument("--live", action="store_true", help="liveness: /v2/health/live instead of ready")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    try:
        print(f"health: {check(args.url, args.live)}")
        return 0
    except Unhealthy as error:
        print(f"health: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
