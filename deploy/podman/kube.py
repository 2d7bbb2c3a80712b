"""`make kube-play` / `make kube-down`: the Kubernetes server pod of overlays/local, run by podman.

    python deploy/podman/kube.py play [--repository model_repository] [--http-port 8000 ...]
    python deploy/podman/kube.py down

`play` renders deploy/kubernetes/overlays/local with `kubectl kustomize` and gives `podman kube
play` what it runs of it (pod_spec.py): the server Deployment `ser-triton` and its ConfigMap, set
up for this machine (published ports, the repository's path, its emptyDirs made first). It leaves
out the Services, NetworkPolicies, HorizontalPodAutoscaler, PodDisruptionBudgets and PodMonitor
(podman skips kinds it does not know: there is no cluster network, scheduler or Prometheus to
give them to) and the edge Deployment (its upstream is the Service `ser-triton`, a name only
cluster DNS resolves, and its ports are the server pod's; the CPU server pod runs its own edge on
8000/8001 anyway). Beside the pod it starts kubelet.py, which runs the pod's probes (and its
preStop hook before a restart) as the kubelet does, since podman 4.3 runs neither; its log and
state are in the state folder (build/kube-play). `play` returns once the pod is ready (the
startup probe passed, then the readiness probe), or fails, with the container's log, if the
startup probe gives up first.

`down` stops the prober, stops the pod as the kubelet stops a pod (its preStop hook, then SIGTERM,
within terminationGracePeriodSeconds), and removes it with `podman kube down`, volumes included.

Standard library and PyYAML (the virtualenv's, or Debian's python3-yaml).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import engine
import pod_spec
from kubelet import run_pre_stop

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "deploy/kubernetes/overlays/local"
STATE = ROOT / "build/kube-play"
KUBELET = Path(__file__).with_name("kubelet.py")
PORT_FLAGS = {"http": "http_port", "grpc": "grpc_port", "metrics": "metrics_port"}


class KubeError(RuntimeError):
    """The pod cannot be played; the message says why and what to do."""


PREFIX = {"play": "make kube-play", "down": "make kube-down"}
COMMAND = ["play"]


def say(message: str) -> None:
    print(f"{PREFIX[COMMAND[0]]}: {message}", flush=True)


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
    return pid if str(KUBELET).encode() in command and str(state).encode() in command else None


def became_ready(state: Path, prober: subprocess.Popen, startup: dict) -> bool:
    """Whether the prober says the pod is ready before its startup probe could give up (plus a minute),
    the container restarts, or the prober ends."""
    budget = (startup.get("initialDelaySeconds", 0)
              + startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3))
    deadline = time.monotonic() + budget + 60
    while time.monotonic() < deadline:
        status = read_status(state)
        if status.get("ready"):
            return True
        if status.get("restarts") or prober.poll() is not None:
            return False
        time.sleep(1)
    return False


def play(args) -> int:
    repository = Path(args.repository).resolve()
    if not (repository / "ser" / "config.pbtxt").is_file():
        raise KubeError(f"no exported model repository at {repository}: run `make export` (or `make export "
                        "PRESET=tiny` offline) first, or give REPOSITORY=")
    if not engine.exists("image", args.image):
        raise KubeError(f"the image {args.image} is not here: run `make image` first")
    state = Path(args.state).resolve()
    documents = pod_spec.render(Path(args.overlay))
    deployment, config_maps, left_out = pod_spec.select(documents)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    image = container["image"]
    if not engine.exists("image", image) or engine.image_id(image) != engine.image_id(args.image):
        raise KubeError(f"the overlay runs {image}, not {args.image}: build that with `make image IMAGE={image}`")
    ports = {name: getattr(args, flag) for name, flag in PORT_FLAGS.items()}
    played, beside, volumes = pod_spec.for_podman(deployment, repository, args.host, ports, args.name)
    pod = pod_spec.pod_name(played)
    if engine.exists("pod", pod) or prober_running(state):
        raise KubeError(f"the pod {pod} is already there: `make kube-down` first")
    state.mkdir(parents=True, exist_ok=True)
    for leftover in ("status.json", "prober.pid"):
        (state / leftover).unlink(missing_ok=True)
    manifest = state / "played.yaml"
    manifest.write_text(pod_spec.yaml_module().safe_dump_all([played, *config_maps], sort_keys=False))
    spec = played["spec"]["template"]["spec"]
    (state / "pod.json").write_text(json.dumps({
        "pod": pod, "container": pod_spec.container_name(played, container["name"]), "host": args.host,
        "terminationGracePeriodSeconds": spec.get("terminationGracePeriodSeconds", 30),
        "restartPolicy": spec.get("restartPolicy", "Always"), "volumes": [v["name"] for v in volumes],
        **beside[container["name"]]}, indent=1))
    say(f"{args.overlay.relative_to(ROOT) if args.overlay.is_relative_to(ROOT) else args.overlay} rendered; "
        f"playing Deployment/{played['metadata']['name']} and "
        f"{', '.join('ConfigMap/' + c['metadata']['name'] for c in config_maps)} "
        f"({manifest}); left out: {', '.join(left_out)}")
    for volume in volumes:
        engine.podman("volume", "rm", "--force", volume["name"])
        pod_spec.create_volume(volume)
    engine.podman("kube", "play", str(manifest), check=True)
    log = open(state / "prober.log", "wb")
    prober = subprocess.Popen([sys.executable, str(KUBELET), "--state", str(state)],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    (state / "prober.pid").write_text(str(prober.pid))
    if became_ready(state, prober, beside[container["name"]].get("startupProbe", {})):
        say(f"ready: pod {pod} (startup and readiness probes passed): HTTP {args.host}:{ports['http']}, "
            f"gRPC {args.host}:{ports['grpc']}, metrics http://{args.host}:{ports['metrics']}/metrics; "
            f"probes: {state / 'prober.log'}. `make kube-down` removes it.")
        return 0
    logs = engine.podman("logs", "--tail", "30", pod_spec.container_name(played, container["name"]))
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
    if engine.exists("pod", setup["pod"]):
        left = run_pre_stop(setup["container"], setup.get("preStop"), setup["terminationGracePeriodSeconds"])
        engine.podman("pod", "stop", "--time", str(max(2, round(left))), setup["pod"])
        engine.podman("kube", "down", str(manifest), check=True)
        say(f"removed the pod {setup['pod']}")
    else:
        say(f"the pod {setup['pod']} was gone already")
    if setup.get("volumes"):  # podman kube down keeps them
        engine.podman("volume", "rm", "--force", *setup["volumes"])
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
    args = parser.parse_args(argv)
    COMMAND[0] = args.command
    try:
        return play(args) if args.command == "play" else down(args)
    except (KubeError, pod_spec.SpecError, engine.EngineError) as error:
        print(f"{PREFIX[args.command]}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
