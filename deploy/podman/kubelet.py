"""The kubelet's part that podman 4.3 leaves out, run beside a pod of `make kube-play`: its probes, and
its preStop hook before a container is stopped.

    python deploy/podman/kubelet.py --state build/kube-play     (kube.py play starts it)

podman 4.3 runs a livenessProbe only, and as `curl` inside the container (the image has no curl)
against the port's number (a named port, as here, becomes 0), from systemd timers (none on machines
without systemd; where there are, it would fail and restart the container every 30 s); it ignores
startupProbe, readinessProbe and lifecycle hooks. So the pod's own startup, readiness and liveness
probes run from this machine, as the kubelet runs them from the node: HTTP GETs on the container's
published ports, with their periods, timeouts, thresholds and initial delays; readiness and liveness
only once the startup probe has passed. A startup or liveness probe that fails failureThreshold
times in a row stops the container as the kubelet does (stop_container: the preStop hook, then
SIGTERM, SIGKILL at the end of terminationGracePeriodSeconds), and podman restarts it under the
pod's restartPolicy (Always, the only one a Deployment takes), as it restarts a container that
exits by itself. `make kube-down` stops the pod with the same hook first.

The state folder holds what kube.py play set up (pod.json) and what happens: status.json (started,
ready, restarts, the last events), and the log. Standard library only.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import engine
from pod_spec import PROBES


def setup(state: Path) -> dict:
    """What kube.py play wrote for the pod: its names, host, grace period, restart policy, and for its
    container the probes, published ports and preStop command."""
    return json.loads((state / "pod.json").read_text())


def run_pre_stop(container: str, command: list[str] | None, grace: float) -> float:
    """The container's preStop hook, as the kubelet runs it before SIGTERM, within the grace period;
    the seconds of the grace period it leaves."""
    if not command:
        return grace
    started = time.monotonic()
    try:
        engine.podman("exec", container, *command, timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    return max(0.0, grace - (time.monotonic() - started))


class Prober:
    def __init__(self, state: Path):
        self.state = state
        pod = setup(state)
        self.pod, self.container, self.host = pod["pod"], pod["container"], pod["host"]
        self.grace = pod["terminationGracePeriodSeconds"]
        self.restart_policy = pod["restartPolicy"]
        self.probes = {kind: pod[kind] for kind in PROBES if kind in pod}
        self.ports, self.pre_stop = pod["ports"], pod.get("preStop")
        self.status = {"pod": self.pod, "container": self.container, "started": False, "ready": False,
                       "restarts": 0, "events": [], "container_started_at": None}

    def write(self) -> None:
        temporary = self.state / "status.json.tmp"
        temporary.write_text(json.dumps(self.status, indent=1))
        temporary.replace(self.state / "status.json")

    def event(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.status["events"] = [*self.status["events"][-99:], f"{stamp} {message}"]
        print(f"{stamp} {message}", flush=True)
        self.write()

    def url(self, probe: dict) -> tuple[str, float]:
        get = probe["httpGet"]
        port = get["port"]
        number = self.ports[port] if isinstance(port, str) else port
        scheme = get.get("scheme", "HTTP").lower()
        url = f"{scheme}://{get.get('host') or self.host}:{number}{get.get('path', '/')}"
        return url, probe.get("timeoutSeconds", 1)

    def check(self, kind: str) -> tuple[bool, str]:
        url, timeout = self.url(self.probes[kind])
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                return 200 <= reply.status < 400, f"HTTP {reply.status}"
        except urllib.error.HTTPError as error:
            return 200 <= error.code < 400, f"HTTP {error.code}"
        except OSError as error:
            return False, str(getattr(error, "reason", error))

    def restart(self, why: str, started_at: str) -> None:
        """As the kubelet does: stop the container (its preStop hook, then SIGTERM to its first
        process, SIGKILL at the end of the grace period), then its restartPolicy restarts it:
        podman's, which restarts a container that exits by itself (`podman stop` or `podman restart`
        would count as stopped by the user, and stop the pod with its last container)."""
        self.status.update(started=False, ready=False)
        self.status["restarts"] += 1
        self.event(f"{why}: stopping the container (preStop hook, SIGTERM, SIGKILL after {self.grace} s); "
                   f"restartPolicy {self.restart_policy} restarts it")
        left = run_pre_stop(self.container, self.pre_stop, self.grace)
        pid = (engine.inspect(self.container) or {}).get("State", {}).get("Pid")
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + max(left, 2)  # the kubelet's 2 s after a hook that used it all
            while self.still_this_start(started_at) and time.monotonic() < deadline:
                time.sleep(0.5)
            if self.still_this_start(started_at):
                self.event(f"still running after the {self.grace} s grace period: SIGKILL")
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def run(self) -> None:
        self.write()
        started_at = None
        while engine.exists("pod", self.pod):
            data = engine.inspect(self.container)
            if data is None:
                return
            if not data["State"]["Running"]:
                if self.status["ready"] or self.status["started"]:
                    self.event(f"container exited ({data['State'].get('ExitCode')}): not ready")
                self.status.update(started=False, ready=False)
                self.write()
                time.sleep(1)
                continue
            if data["State"]["StartedAt"] != started_at:  # a new start: the probes begin again
                started_at = data["State"]["StartedAt"]
                self.status.update(started=False, ready=False, container_started_at=started_at)
                self.event(f"container started at {started_at}")
                self.cycle(started_at)
            time.sleep(1)

    def still_this_start(self, started_at: str) -> bool:
        data = engine.inspect(self.container)
        return bool(data) and data["State"]["Running"] and data["State"]["StartedAt"] == started_at

    def cycle(self, started_at: str) -> None:
        """The probes of one container start, until it stops or a probe restarts it."""
        start = time.monotonic()
        due, failures, successes = {}, {}, {}
        for kind in self.probes:
            due[kind] = start + self.probes[kind].get("initialDelaySeconds", 0)
            failures[kind] = successes[kind] = 0
        if "startupProbe" not in due:
            self.status["started"] = True
        while self.still_this_start(started_at):
            active = [k for k in due if (k == "startupProbe") != self.status["started"]]
            if not active:
                return
            kind = min(active, key=due.get)
            time.sleep(max(0.0, due[kind] - time.monotonic()))
            if not self.still_this_start(started_at):
                return
            probe = self.probes[kind]
            passed, detail = self.check(kind)
            due[kind] = time.monotonic() + probe.get("periodSeconds", 10)
            if passed:
                failures[kind] = 0
                successes[kind] += 1
                if kind == "startupProbe" and successes[kind] >= probe.get("successThreshold", 1):
                    self.status["started"] = True
                    self.event(f"startup probe passed ({detail})")
                    for other in ("readinessProbe", "livenessProbe"):
                        if other in due:
                            due[other] = time.monotonic()
                elif kind == "readinessProbe" and not self.status["ready"] \
                        and successes[kind] >= probe.get("successThreshold", 1):
                    self.status["ready"] = True
                    self.event(f"ready: readiness probe passed ({detail})")
                continue
            successes[kind] = 0
            failures[kind] += 1
            threshold = probe.get("failureThreshold", 3)
            self.event(f"{kind} failed ({failures[kind]}/{threshold}): {detail}")
            if kind == "readinessProbe" and failures[kind] >= threshold and self.status["ready"]:
                self.status["ready"] = False
                self.event("not ready: readiness probe failed")
            elif kind in ("startupProbe", "livenessProbe") and failures[kind] >= threshold:
                self.restart(f"{kind} failed {threshold} times in a row", started_at)
                return


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/podman/kubelet.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=Path, required=True, help="the state folder kube.py play wrote")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Prober(args.state.resolve()).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
