"""What the deploy tests hold the images and manifests to: the server's own defaults, flags and
health endpoints, the manifests as `kubectl kustomize` renders them, and the edge's nginx config
read as nginx reads it (its servers, their locations, which location a request lands in)."""

import dataclasses
import datetime
import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from deploy.podman import engine
from ser_triton.serving.bundled import wheel_root
from ser_triton.serving.supervisor import TritonServer
from tests.conftest import REPO_ROOT, require

DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILES = {"cpu": DEPLOY / "docker/cpu.Dockerfile", "gpu": DEPLOY / "docker/gpu.Dockerfile"}

READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
"""Triton's health endpoints (KServe v2 protocol); test_deploy_kubernetes asks a live server for them."""

HEALTH_PROBE = ["python3", "-m", "ser_triton.serving.health"]
"""The exec probe of the pods without a watchdog (the GPU image, KServe): ready and every Python step alive."""


def server_ports() -> dict[str, int]:
    """Port name -> number that the launcher (`make serve`, the CPU image) listens on by default."""
    defaults = {f.name: f.default for f in dataclasses.fields(TritonServer)}
    return {"http": defaults["http_port"], "grpc": defaults["grpc_port"], "metrics": defaults["metrics_port"]}


@functools.cache
def tritonserver_help() -> str:
    """`tritonserver --help` of the bundled server, the version (2.51) of the GPU image's container."""
    shown = subprocess.run([wheel_root() / "bin/tritonserver", "--help"], capture_output=True, text=True)
    return shown.stdout + shown.stderr


def tritonserver_flags() -> set[str]:
    return set(re.findall(r"^\s+(--[a-z0-9-]+) ", tritonserver_help(), re.MULTILINE))


def tritonserver_default_ports() -> dict[str, int]:
    """The ports tritonserver itself listens on when no flag says otherwise (the GPU image)."""
    return {name: int(re.search(rf"--{name}-port <integer>\s+[^-]*?Default is (\d+)", tritonserver_help()).group(1))
            for name in ("http", "grpc", "metrics")}


def flags(arguments) -> dict[str, str]:
    """--name=value arguments as {--name: value} (a bare --name as {--name: ""})."""
    return dict(argument.partition("=")[::2] for argument in arguments if argument.startswith("--"))


def kubectl() -> str:
    """The kubectl the manifests are rendered with (conftest.require: skipped without one, with how
    to get it, or failed where the run requires it)."""
    return require("kubectl")


@functools.cache
def render(directory: Path) -> tuple[dict, ...]:
    """The objects `kubectl kustomize DIRECTORY` renders, as `kubectl apply -k` would send them."""
    kubectl()
    try:
        rendered = engine.kustomize(directory)
    except engine.EngineError as error:
        pytest.fail(str(error))
    return tuple(document for document in yaml.safe_load_all(rendered) if document)


def find(documents, kind: str, name: str | None = None) -> dict:
    """The one object of this kind (and name) among the rendered ones."""
    found = [d for d in documents if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


@functools.cache
def render_composed(resources: tuple[Path, ...], components: tuple[Path, ...] = ()) -> tuple[dict, ...]:
    """What a kustomization of one's own renders: these directories, with these optional components
    (as docs/security-kubernetes.md tells users to write one)."""
    with tempfile.TemporaryDirectory(prefix="kustomization-") as directory:
        def relative(path: Path) -> str:  # kustomize takes no absolute paths
            return os.path.relpath(path, directory)
        (Path(directory) / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [relative(p) for p in resources], "components": [relative(p) for p in components]}))
        return render(Path(directory))


def matches(selector: dict, labels: dict) -> bool:
    """Whether a Kubernetes label selector (matchLabels and matchExpressions) selects these labels;
    an empty selector selects everything, as in a NetworkPolicy."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if not {"In": lambda: labels.get(key) in values, "NotIn": lambda: labels.get(key) not in values,
                "Exists": lambda: key in labels, "DoesNotExist": lambda: key not in labels}[operator]():
            return False
    return True


def nginx() -> str:
    found = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if found is None:
        pytest.fail("nginx is not installed, and the deploy tests check the edge's config with `nginx -t`: "
                    "run `make setup` as root (it installs the Debian package) or `apt-get install nginx`")
    return found


def blocks(text: str, opening: str) -> list[tuple[str, str]]:
    """(what follows `opening` up to its brace, the block's body) for every `opening ... {` at any
    depth; quoted strings (which hold braces: the JSON error bodies) and comments are skipped."""
    found = []
    for match in re.finditer(rf"(?m)^\s*{opening}\b([^{{;]*)\{{", text):
        depth, index, quote = 1, match.end(), None
        while depth:
            character = text[index]
            if quote:
                if character == "\\":
                    index += 1
                elif character == quote:
                    quote = None
            elif character in "'\"":
                quote = character
            elif character == "#":
                index = text.index("\n", index)
            else:
                depth += {"{": 1, "}": -1}.get(character, 0)
            index += 1
        found.append((match.group(1).strip(), text[match.end():index - 1]))
    return found


@dataclasses.dataclass(frozen=True)
class Location:
    modifier: str  # "=", "~", "~*", "^~", "" (a prefix) or "@" (named)
    pattern: str
    body: str

    @property
    def forwards(self) -> bool:
        return bool(re.search(r"\b(proxy_pass|grpc_pass)\b", self.body))


def locations(server: str) -> list[Location]:
    found = []
    for head, body in blocks(server, "location"):
        if head.startswith("@"):
            found.append(Location("@", head[1:], body))
            continue
        modifier, _, pattern = head.rpartition(" ") if " " in head else ("", "", head)
        found.append(Location(modifier.strip(), pattern.strip().strip('"'), body))
    return found


def route(server: str, path: str) -> Location:
    """The location nginx picks for `path`: an exact match, else the longest prefix unless a regex
    (in the order written) matches first, as nginx's documentation gives the order."""
    candidates = [location for location in locations(server) if location.modifier != "@"]
    for location in candidates:
        if location.modifier == "=" and location.pattern == path:
            return location
    prefixes = [l for l in candidates if l.modifier in ("", "^~") and path.startswith(l.pattern)]
    longest = max(prefixes, key=lambda l: len(l.pattern), default=None)
    if longest is not None and longest.modifier == "^~":
        return longest
    for location in candidates:
        if location.modifier in ("~", "~*") and re.search(
                location.pattern, path, re.IGNORECASE if location.modifier == "~*" else 0):
            return location
    assert longest is not None, f"no location of the edge takes {path}: nginx would answer 404"
    return longest


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for localhost and 127.0.0.1: stand-ins for the files of a kubernetes.io/tls
    Secret, and the edge's certificate in the security tests."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    certificate_path, key_path = directory / "tls.crt", directory / "tls.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return certificate_path, key_path
