"""The Kubernetes and KServe manifests under deploy/: every kustomization renders with
`kubectl kustomize`, validates offline against the API schemas of a current Kubernetes, and agrees
with the server it runs: ports, health endpoints, flags, the ensemble's name and its metrics."""

import re
import urllib.error
import urllib.request

import kubernetes_validate
import promql_parser
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from kubernetes_validate.utils import SchemaNotFoundError

from ser_triton.core.contract import ENSEMBLE
from ser_triton.serving.supervisor import TritonServer
from tests.deploy_helpers import (
    DEPLOY, DOCKERFILES, KUBERNETES, LIVE_PATH, READY_PATH, find, flags, render, server_ports,
    tritonserver_default_ports, tritonserver_flags,
)

KUBERNETES_VERSION = "1.37"
"""The API schemas the manifests must satisfy (strict: unknown fields are errors)."""

OVERLAYS = sorted(path.name for path in (KUBERNETES / "overlays").iterdir())
KUSTOMIZATIONS = [KUBERNETES / "overlays" / name for name in OVERLAYS] + [KUBERNETES / "envoy", DEPLOY / "kserve"]

ADAPTER_RULES = yaml.safe_load((KUBERNETES / "monitoring/prometheus-adapter-values.yaml").read_text())["rules"]["custom"]
MINIMUM_STARTUP_SECONDS = 300
"""Full-size models load for minutes; the startup probe must wait at least this long."""


def overlay(name: str) -> tuple[dict, ...]:
    return render(KUBERNETES / "overlays" / name)


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
    arguments = flags(container["args"])
    assert container["args"][0] == "tritonserver" and set(arguments) <= tritonserver_flags()
    assert arguments["--strict-readiness"] == "true"
    assert [p["containerPort"] for p in container["ports"]] == [int(arguments["--http-port"])]
    assert container["readinessProbe"]["httpGet"] == {"path": READY_PATH, "port": int(arguments["--http-port"])}
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


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_object_validates_against_the_kubernetes_api(directory):
    documents = render(directory)
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
    container = server_container(overlay(name))
    startup, ready, live = (container[p]["httpGet"] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    assert (startup["path"], ready["path"], live["path"]) == (READY_PATH, READY_PATH, LIVE_PATH)
    assert startup["port"] == ready["port"] == live["port"] == "http"
    assert probe_budget_seconds(container["startupProbe"]) >= MINIMUM_STARTUP_SECONDS


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
            assert flags(container["args"])["--strict-readiness"] == "true"
            assert container["args"][0] == "tritonserver" and set(flags(container["args"])) <= tritonserver_flags()
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
    if name.startswith("gpu"):
        assert int(gpus) >= 1 and resources["requests"]["nvidia.com/gpu"] == gpus
    else:
        assert gpus is None


@pytest.mark.parametrize("name", OVERLAYS)
def test_each_overlay_runs_its_image(name):
    documents = overlay(name)
    container = server_container(documents)
    hardware = name.split("-")[0]
    assert container["image"].split(":")[0].endswith(f"ser-triton-{hardware}")
    if hardware == "gpu":
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
        if name.startswith("cpu"):
            documents = overlay(name)
            assert repository_mount(documents, server_container(documents))["mountPath"] == directory


# --- the L7 proxy ------------------------------------------------------------------------------------

def envoy_config() -> dict:
    documents = render(KUBERNETES / "envoy")
    [config_map] = [d for d in documents if d["kind"] == "ConfigMap"]
    return yaml.safe_load(config_map["data"]["envoy.yaml"])


def test_envoy_balances_each_request_over_the_ready_pods():
    config = envoy_config()
    listeners = {listener["name"]: listener["address"]["socket_address"]["port_value"]
                 for listener in config["static_resources"]["listeners"]}
    ports = server_ports()
    assert listeners == {"http": ports["http"], "grpc": ports["grpc"]}  # clients see the server's ports
    headless = find(overlay("gpu"), "Service", "ser-triton-headless")["metadata"]["name"]
    clusters = {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}
    for protocol, cluster in (("grpc", clusters["triton_grpc"]), ("http", clusters["triton_http"])):
        assert cluster["type"] == "STRICT_DNS" and cluster["lb_policy"] in ("LEAST_REQUEST", "ROUND_ROBIN")
        [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert endpoint["endpoint"]["address"]["socket_address"] == {"address": headless, "port_value": ports[protocol]}
        [check] = cluster["health_checks"]
        assert check["http_health_check"]["path"] == READY_PATH
    grpc_options = clusters["triton_grpc"]["typed_extension_protocol_options"]
    assert "http2_protocol_options" in grpc_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "explicit_http_config"]  # gRPC needs HTTP/2 to the pods
    assert clusters["triton_grpc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "health_check_config"]["port_value"] == ports["http"]


def test_envoy_service_exposes_the_servers_ports():
    documents = render(KUBERNETES / "envoy")
    service = find(documents, "Service", "ser-triton-l7")["spec"]
    ports = server_ports()
    assert {p["name"]: p["port"] for p in service["ports"]} == {"http": ports["http"], "grpc": ports["grpc"]}
    deployment = find(documents, "Deployment", "ser-triton-l7")["spec"]
    assert selects(service["selector"], deployment["template"]["metadata"]["labels"])
    assert not selects(service["selector"], pod_labels(overlay("gpu")))  # never the servers themselves
