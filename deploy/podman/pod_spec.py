"""What `make kube-play` gives `podman kube play` of overlays/local, and what it keeps to run beside it.

The overlay rendered with `kubectl kustomize`; of it, the server Deployment `ser-triton` and the
ConfigMaps it uses (the rest has no cluster here to go to: kube.py says what is left out). Set on
the pod for this machine, nothing else:
- each container port gets a hostPort (HTTP_PORT, GRPC_PORT, METRICS_PORT) on HOST, where a
  cluster would put Services in front;
- the model repository's hostPath is REPOSITORY;
- the emptyDir volumes are renamed after the pod, to be made first as the kubelet makes them
  (empty_dirs says why);
- the probes and the preStop hook move out of the pod: podman 4.3 runs a livenessProbe only (as
  `curl` inside the container, from systemd timers) and neither startup nor readiness probes nor
  lifecycle hooks, so kubelet.py runs them beside the pod, as the kubelet does;
- with a name, the Deployment's name (so that a test's pod and yours do not collide).
"""

import copy
import os
from pathlib import Path

import engine

SERVER = "ser-triton"
"""The server Deployment of the overlays."""

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


class SpecError(RuntimeError):
    """The overlay cannot be played here; the message says why and what to do."""


def yaml_module():
    try:
        import yaml
    except ImportError:
        raise SpecError("PyYAML is missing: run `make setup` (or apt-get install python3-yaml)") from None
    return yaml


def render(overlay: Path) -> list[dict]:
    return [d for d in yaml_module().safe_load_all(engine.kustomize(overlay)) if d]


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
    """The podman volume that stands in for one emptyDir (empty_dirs)."""
    mode = "2777" if volume["group"] is not None else "0777"
    if volume["memory"]:
        options = [f"mode={mode}", *([f"gid={volume['group']}"] if volume["group"] is not None else []),
                   # in pages: podman takes size= for a disk quota, which tmpfs cannot have
                   *([f"nr_blocks={-(-volume['size'] // os.sysconf('SC_PAGE_SIZE'))}"] if volume["size"] else [])]
        engine.podman("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt",
                      f"o={','.join(options)}", volume["name"], check=True)
        return
    engine.podman("volume", "create", volume["name"], check=True)
    mountpoint = engine.podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume["name"],
                               check=True).stdout.strip()
    if volume["group"] is not None:
        os.chown(mountpoint, 0, volume["group"])
    os.chmod(mountpoint, int(mode, 8))


def beside(container: dict, ports: dict[str, int]) -> dict:
    """What is taken out of a container to run beside the pod: its probes and its preStop hook, and
    where its named ports are published."""
    taken = {"ports": {p["name"]: ports.get(p["name"], p["containerPort"])
                       for p in container.get("ports", []) if "name" in p},
             **{kind: container.pop(kind) for kind in PROBES if kind in container}}
    lifecycle = container.pop("lifecycle", {})
    hook = lifecycle.get("preStop")
    if set(lifecycle) - {"preStop"} or (hook is not None and "exec" not in hook):
        raise SpecError(f"container {container['name']}: make kube-play runs an exec preStop hook only, "
                        f"not {lifecycle}")
    if hook is not None:
        taken["preStop"] = hook["exec"]["command"]
    return taken


def for_podman(deployment: dict, repository: Path, host: str, ports: dict[str, int], name: str | None
               ) -> tuple[dict, dict, list[dict]]:
    """The Deployment as podman plays it here, what runs beside it (container -> its probes, ports
    and preStop command), and the volumes to make for its emptyDirs."""
    played = copy.deepcopy(deployment)
    if name:
        played["metadata"]["name"] = name
    pod = played["spec"]["template"]["spec"]
    volumes = empty_dirs(pod, pod_name(played))
    taken = {}
    for container in pod["containers"]:
        taken[container["name"]] = beside(container, ports)
        for port in container.get("ports", []):
            port["hostPort"] = ports.get(port.get("name"), port["containerPort"])
            port["hostIP"] = host
    [volume] = [v for v in pod["volumes"] if v["name"] == "model-repository"]
    volume["hostPath"]["path"] = str(repository)
    return played, taken, volumes


def pod_name(deployment: dict) -> str:
    """The pod `podman kube play` makes of a Deployment (its first replica's)."""
    return f"{deployment['metadata']['name']}-pod-0"


def container_name(deployment: dict, container: str) -> str:
    return f"{pod_name(deployment)}-{container}"
