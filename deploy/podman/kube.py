"""`make kube-play` / `make kube-down`: the Kubernetes server pod of overlays/local, run by podman.

    python deploy/podman/kube.py play [--repository model_repository] [--http-port 8000 ...]
    python deploy/podman/kube.py down

`play` renders deploy/kubernetes/overlays/local with `kubectl kustomize` and gives `podman kube
play` what it runs of it: the server Deployment `ser-triton` and its ConfigMap. It leaves out
the Services, NetworkPolicies, HorizontalPodAutoscaler, PodDisruptionBudgets and PodMonitor
(podman skips kinds it does not know: there is no cluster network, scheduler or Prometheus to
give them to) and the edge Deployment (its upstream is the Service `ser-triton`, a name only
cluster DNS resolves, and its ports are the server pod's; the CPU server pod runs its own edge on
8000/8001 anyway). What is set on the pod for this machine, nothing else:
- each container port gets a hostPort (HTTP_PORT, GRPC_PORT, METRICS_PORT) on HOST, where a
  cluster would put Services in front;
- the model repository's hostPath is REPOSITORY;
- the emptyDir volumes are made first, as the kubelet makes them (podman 4.3 would make a disk
  folder owned by root, shared by every pod with a volume of that name, without medium, size or
  fsGroup: the server, uid 10001, could not write its /dev/shm), and named after the pod;
- the probes move from the pod to this script, which runs them as the kubelet does (below);
- with --name, the Deployment's name (so that a test's pod and yours do not collide).

The probes: podman 4.3 runs a livenessProbe only, and as `curl` inside the container (the image
has no curl) against the port's number (a named port, as here, becomes 0), from systemd timers
(none on machines without systemd; where there are, it would fail and restart the container
every 30 s); it ignores startupProbe and readinessProbe. So `play` starts
a prober beside the pod, `kube.py probe`, that runs the pod's own startup, readiness and liveness
probes from this machine, as the kubelet runs them from the node: HTTP GETs on the container's
published ports, with their periods, timeouts, thresholds and initial delays; readiness and
liveness only once the startup probe has passed; a startup or liveness probe that fails
failureThreshold times in a row kills the container as the kubelet does (SIGTERM, SIGKILL after
terminationGracePeriodSeconds), and podman restarts it under the pod's restartPolicy (Always, the
only one a Deployment takes), as it restarts a container that exits by itself. Its log and state
are in the state folder (build/kube-play).
`play` returns once the pod is ready (the startup probe passed, then the readiness probe), or
fails, with the container's log, if the startup probe gives up first.

`down` stops the prober, stops the pod within its terminationGracePeriodSeconds, and removes it
with `podman kube down`, volumes included.

Standard library and PyYAML (the virtualenv's, or Debian's python3-yaml).
"""

import argparse
import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "deploy/kubernetes/overlays/local"
STATE = ROOT / "build/kube-play"
SERVER = "ser-triton"
"""The server Deployment of the overlays."""
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
PORT_FLAGS = {"http": "http_port", "grpc": "grpc_port", "metrics": "metrics_port"}


class KubeError(RuntimeError):
    """The pod cannot be played; the message says why and what to do."""


PREFIX = {"play": "make kube-play", "down": "make kube-down", "probe": "kube.py probe"}
COMMAND = ["play"]


def say(message: str) -> None:
    print(f"{PREFIX[COMMAND[0]]}: {message}", flush=True)


def podman_environment() -> dict:
    """podman's environment: without systemd, no healthcheck timers (there is nothing to run them)."""
    env = dict(os.environ)
    if not Path("/run/systemd/system").is_dir():
        env["DISABLE_HC_SYSTEMD"] = "true"
    return env


def podman(*arguments: str, check: bool = False, **options) -> subprocess.CompletedProcess:
    options.setdefault("capture_output", True)
    done = subprocess.run(["podman", *arguments], text=True, env=podman_environment(), **options)
    if check and done.returncode != 0:
        raise KubeError(f"podman {' '.join(arguments[:2])} failed: {(done.stderr or done.stdout or '').strip()}")
    return done


def yaml_module():
    try:
        import yaml
    except ImportError:
        raise KubeError("PyYAML is missing: run `make setup` (or apt-get install python3-yaml)") from None
    return yaml


def render(overlay: Path = OVERLAY) -> list[dict]:
    rendered = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True)
    if rendered.returncode != 0:
        raise KubeError(f"kubectl kustomize {overlay} failed: {rendered.stderr.strip()}")
    return [d for d in yaml_module().safe_load_all(rendered.stdout) if d]


def config_maps_used(pod: dict) -> set[str]:
    names = set()
    for container in pod["containers"] + pod.get("initContainers", []):
        names |= {source["configMapRef"]["name"] for source in container.get("envFrom", []) if "configMapRef" in source}
        names |= {variable["valueFrom"]["configMapKeyRef"]["name"] for variable in container.get("env", [])
                  if "configMapKeyRef" in variable.get("valueFrom", {})}
    names |= {volume["configMap"]["name"] for volume in pod.get("volumes", []) if "configMap" in volume}
    return names


def select(documents: list[dict]) -> tuple[dict, list[dict], list[str]]:
    """The server Deployment, the ConfigMaps it uses, and what is left out (kind/name)."""
    [deployment] = [d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == SERVER]
    used = config_maps_used(deployment["spec"]["template"]["spec"])
    config_maps = [d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] in used]
    kept = [deployment, *config_maps]
    left_out = [f"{d['kind']}/{d['metadata']['name']}" for d in documents if not any(d is k for k in kept)]
    return deployment, config_maps, left_out


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity (1Gi, 512Mi, 64M, 1000) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for unit, factor in units.items():
        if str(quantity).endswith(unit):
            return int(float(str(quantity)[:-len(unit)]) * factor)
    return int(quantity)


def empty_dirs(pod: dict, name: str) -> list[dict]:
    """The pod's emptyDir volumes, renamed after the pod, and the podman volumes that stand in for
    them. podman 4.3 turns an emptyDir into a volume named after it (`tmp`, shared by every pod
    that has one) on disk, owned by root, and ignores its medium, sizeLimit and the pod's fsGroup:
    a server running as 10001 could not write its /dev/shm. So each one is made first, as the
    kubelet makes it: a tmpfs of sizeLimit for medium Memory, else a folder; writable by all,
    group fsGroup (setgid), as fsGroup gives it."""
    group = pod.get("securityContext", {}).get("fsGroup")
    made = []
    for volume in pod.get("volumes", []):
        if "emptyDir" not in volume:
            continue
        renamed = f"{name}-{volume['name']}"
        for container in pod["containers"] + pod.get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                if mount["name"] == volume["name"]:
                    mount["name"] = renamed
        spec = volume["emptyDir"] or {}
        made.append({"name": renamed, "memory": spec.get("medium") == "Memory",
                     "size": quantity_bytes(spec["sizeLimit"]) if "sizeLimit" in spec else None, "group": group})
        volume["name"] = renamed
    return made


def create_volume(volume: dict) -> None:
    mode = "2777" if volume["group"] is not None else "0777"
    if volume["memory"]:
        options = [f"mode={mode}", *([f"gid={volume['group']}"] if volume["group"] is not None else []),
                   # in pages: podman takes size= for a disk quota, which tmpfs cannot have
                   *([f"nr_blocks={-(-volume['size'] // os.sysconf('SC_PAGE_SIZE'))}"] if volume["size"] else [])]
        podman("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", f"o={','.join(options)}",
               volume["name"], check=True)
        return
    podman("volume", "create", volume["name"], check=True)
    mountpoint = podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume["name"], check=True).stdout.strip()
    if volume["group"] is not None:
        os.chown(mountpoint, 0, volume["group"])
    os.chmod(mountpoint, int(mode, 8))


def for_podman(deployment: dict, repository: Path, host: str, ports: dict[str, int], name: str | None
               ) -> tuple[dict, dict, list[dict]]:
    """The Deployment as podman plays it here, the probes taken out of it (container -> probes),
    and the volumes to make for its emptyDirs."""
    played = copy.deepcopy(deployment)
    if name:
        played["metadata"]["name"] = name
    pod = played["spec"]["template"]["spec"]
    volumes = empty_dirs(pod, pod_name(played))
    probes = {}
    for container in pod["containers"]:
        probes[container["name"]] = {"ports": {p["name"]: ports.get(p["name"], p["containerPort"])
                                               for p in container.get("ports", []) if "name" in p},
                                     **{kind: container.pop(kind) for kind in PROBES if kind in container}}
        for port in container.get("ports", []):
            port["hostPort"] = ports.get(port.get("name"), port["containerPort"])
            port["hostIP"] = host
    [volume] = [v for v in pod["volumes"] if v["name"] == "model-repository"]
    volume["hostPath"]["path"] = str(repository)
    return played, probes, volumes


def pod_name(deployment: dict) -> str:
    """The pod `podman kube play` makes of a Deployment (its first replica's)."""
    return f"{deployment['metadata']['name']}-pod-0"


def container_name(deployment: dict, container: str) -> str:
    return f"{pod_name(deployment)}-{container}"


def pod_exists(name: str) -> bool:
    return podman("pod", "exists", name).returncode == 0


def inspect(container: str) -> dict | None:
    found = podman("container", "inspect", container)
    if found.returncode != 0:
        return None
    [data] = json.loads(found.stdout)
    return data


# --- the prober: the kubelet's probes, from this machine ------------------------------------------

class Prober:
    def __init__(self, state: Path):
        self.state = state
        setup = json.loads((state / "pod.json").read_text())
        self.pod = setup["pod"]
        self.container = setup["container"]
        self.host = setup["host"]
        self.grace = setup["terminationGracePeriodSeconds"]
        self.restart_policy = setup["restartPolicy"]
        self.probes = setup["probes"]
        self.ports = setup["ports"]
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
        """As the kubelet does: stop the container (SIGTERM to its first process, SIGKILL after the
        grace period), then its restartPolicy restarts it: podman's, which restarts a container
        that exits by itself (`podman stop` or `podman restart` would count as stopped by the user,
        and stop the pod with its last container)."""
        self.status.update(started=False, ready=False)
        data = inspect(self.container)
        pid = (data or {}).get("State", {}).get("Pid")
        self.status["restarts"] += 1
        self.event(f"{why}: killing the container (SIGTERM, {self.grace} s, then SIGKILL); restartPolicy "
                   f"{self.restart_policy} restarts it")
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace
            while self.still_this_start(started_at) and time.monotonic() < deadline:
                time.sleep(0.5)
            if self.still_this_start(started_at):
                self.event(f"still running after {self.grace} s: SIGKILL")
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def run(self) -> None:
        self.write()
        started_at = None
        while pod_exists(self.pod):
            data = inspect(self.container)
            if data is None:
                return
            running = data["State"]["Running"]
            if not running:
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
        data = inspect(self.container)
        return bool(data) and data["State"]["Running"] and data["State"]["StartedAt"] == started_at

    def cycle(self, started_at: str) -> None:
        """The probes of one container start, until it stops or a probe restarts it."""
        start = time.monotonic()
        due, failures, successes = {}, {}, {}
        for kind in PROBES:
            if kind in self.probes:
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


# --- play and down -----------------------------------------------------------------------------

def read_status(state: Path) -> dict:
    try:
        return json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def prober_running(state: Path) -> int | None:
    """The pid of this state's prober, where it runs."""
    try:
        pid = int((state / "prober.pid").read_text())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if b"probe" in command and str(state).encode() in command else None


def play(args) -> int:
    repository = Path(args.repository).resolve()
    if not (repository / "ser" / "config.pbtxt").is_file():
        raise KubeError(f"no exported model repository at {repository}: run `make export` (or `make export "
                        "PRESET=tiny` offline) first, or give REPOSITORY=")
    if podman("image", "exists", args.image).returncode != 0:
        raise KubeError(f"the image {args.image} is not here: run `make image` first")
    state = Path(args.state).resolve()
    documents = render(Path(args.overlay))
    deployment, config_maps, left_out = select(documents)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    image = container["image"]
    if podman("image", "inspect", "--format", "{{.Id}}", image).stdout != \
            podman("image", "inspect", "--format", "{{.Id}}", args.image).stdout:
        raise KubeError(f"the overlay runs {image}, not {args.image}: build that with `make image IMAGE={image}`")
    ports = {name: getattr(args, flag) for name, flag in PORT_FLAGS.items()}
    played, probes, volumes = for_podman(deployment, repository, args.host, ports, args.name)
    pod = pod_name(played)
    if pod_exists(pod) or prober_running(state):
        raise KubeError(f"the pod {pod} is already there: `make kube-down` first")
    state.mkdir(parents=True, exist_ok=True)
    for leftover in ("status.json", "prober.pid"):
        (state / leftover).unlink(missing_ok=True)
    manifest = state / "played.yaml"
    manifest.write_text(yaml_module().safe_dump_all([played, *config_maps], sort_keys=False))
    spec = played["spec"]["template"]["spec"]
    (state / "pod.json").write_text(json.dumps({
        "pod": pod, "container": container_name(played, container["name"]), "host": args.host,
        "terminationGracePeriodSeconds": spec.get("terminationGracePeriodSeconds", 30),
        "restartPolicy": spec.get("restartPolicy", "Always"), "probes": probes[container["name"]],
        "ports": probes[container["name"]]["ports"], "volumes": [v["name"] for v in volumes]}, indent=1))
    say(f"{args.overlay.relative_to(ROOT) if args.overlay.is_relative_to(ROOT) else args.overlay} rendered; "
        f"playing Deployment/{played['metadata']['name']} and "
        f"{', '.join('ConfigMap/' + c['metadata']['name'] for c in config_maps)} "
        f"({manifest}); left out: {', '.join(left_out)}")
    for volume in volumes:
        podman("volume", "rm", "--force", volume["name"])
        create_volume(volume)
    podman("kube", "play", str(manifest), check=True)
    log = open(state / "prober.log", "wb")
    prober = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "probe", "--state", str(state)],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    (state / "prober.pid").write_text(str(prober.pid))
    startup = probes[container["name"]].get("startupProbe", {})
    budget = (startup.get("initialDelaySeconds", 0)
              + startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3))
    deadline = time.monotonic() + budget + 60
    while time.monotonic() < deadline:
        status = read_status(state)
        if status.get("ready"):
            say(f"ready: pod {pod} (startup and readiness probes passed): HTTP {args.host}:{ports['http']}, "
                f"gRPC {args.host}:{ports['grpc']}, metrics http://{args.host}:{ports['metrics']}/metrics; "
                f"probes: {state / 'prober.log'}. `make kube-down` removes it.")
            return 0
        if status.get("restarts") or prober.poll() is not None:
            break
        time.sleep(1)
    logs = podman("logs", "--tail", "30", container_name(played, container["name"]))
    events = "\n  ".join(read_status(state).get("events", [])[-10:])
    print(f"make kube-play: the pod {pod} did not become ready; the prober says:\n  {events}\n"
          f"the container's log ends:\n{logs.stdout}{logs.stderr}\n`make kube-down` removes it.", file=sys.stderr)
    return 1


def down(args) -> int:
    state = Path(args.state).resolve()
    manifest = state / "played.yaml"
    pid = prober_running(state)
    if pid:
        os.kill(pid, signal.SIGTERM)
    if not manifest.is_file():
        say(f"nothing to remove ({manifest} is not there)")
        return 0
    setup = json.loads((state / "pod.json").read_text())
    if pod_exists(setup["pod"]):
        podman("pod", "stop", "--time", str(setup["terminationGracePeriodSeconds"]), setup["pod"])
        podman("kube", "down", str(manifest), check=True)
        say(f"removed the pod {setup['pod']}")
    else:
        say(f"the pod {setup['pod']} was gone already")
    if setup.get("volumes"):  # podman kube down keeps them
        podman("volume", "rm", "--force", *setup["volumes"])
    for name in ("played.yaml", "pod.json", "status.json", "prober.pid"):
        (state / name).unlink(missing_ok=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/podman/kube.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    played = commands.add_parser("play", help="run the server pod of overlays/local and wait until it is ready")
    played.add_argument("--repository", default="model_repository", help="the exported model repository")
    played.add_argument("--image", default="ser-triton-cpu:dev", help="the image `make image` built (the overlay's)")
    played.add_argument("--host", default="127.0.0.1", help="the address the pod's ports are published on")
    played.add_argument("--http-port", type=int, default=8000)
    played.add_argument("--grpc-port", type=int, default=8001)
    played.add_argument("--metrics-port", type=int, default=8002)
    played.add_argument("--overlay", type=Path, default=OVERLAY)
    for command in (played, commands.add_parser("down", help="remove the pod `play` started")):
        command.add_argument("--state", type=Path, default=STATE, help=f"where its files are (default {STATE})")
        command.add_argument("--name", help="the Deployment's name here (default the overlay's: ser-triton); "
                                            "`down` finds it in the state folder")
    probe = commands.add_parser("probe", help="(started by play) run the pod's probes as the kubelet does")
    probe.add_argument("--state", type=Path, required=True)
    args = parser.parse_args(argv)
    COMMAND[0] = args.command
    try:
        if args.command == "play":
            return play(args)
        if args.command == "down":
            return down(args)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        Prober(args.state.resolve()).run()
        return 0
    except KubeError as error:
        print(f"{PREFIX[args.command]}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
