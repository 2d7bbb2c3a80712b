# syntax=docker/dockerfile:1
# The CPU image: the same bundled Triton server as `make serve` (the nvidia-pytriton wheel's
# tritonserver, Python-backend steps running ONNX Runtime), started by the project's launcher on
# all interfaces. Serves a repository exported with the default TARGET=cpu. As `make serve`, the
# launcher puts its edge (NGINX, serving/edge.py) on the public ports 8000/8001 and the server on
# loopback ports behind it, so a container run on its own is filtered and bounded too; metrics
# stay on the server (8002). The Kubernetes edge (deploy/kubernetes/edge) runs this image as well,
# with the command `python -m ser_triton.serving.edge`.
#
#   make image                  # podman, as ser-triton-cpu:dev (deploy/podman/image.py, docs/ship.md)
#   docker build -f deploy/docker/cpu.Dockerfile -t ser-triton-cpu .
#   docker run --rm --shm-size=1g --stop-timeout 60 -p8000:8000 -p8001:8001 -p8002:8002 \
#     -v "$PWD/model_repository:/models:ro" ser-triton-cpu
#
# The model repository is not in the image: mount it at /models (a volume, or a directory that an
# init container filled from object storage; see deploy/kubernetes). On SIGTERM the launcher
# finishes the requests in flight, then stops (at most ~50 s: give the container a stop timeout
# of 60 s, as the pods' grace period).
# The wheel's server needs glibc >= 2.35: Debian bookworm has 2.36. PYTHON_IMAGE may name any
# bookworm base with python3 3.11 (venv), its shared libpython and apt: `make image` bootstraps
# one from Debian's packages where the registry's cannot be pulled (deploy/podman/base.sh).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Package sources: `make image` (deploy/podman/image.py) mounts the host pip's configuration at
# /run/host-pip and the files it names, for the build only; without it (a plain `docker build`)
# pip uses its defaults. Nothing of it is in the image: this stage is thrown away.
# pip runs from a virtualenv of its own (/opt/pip) and installs into the image's (/opt/venv,
# PIP_PYTHON), which so never holds pip or setuptools: nothing installs into a running image.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    PIP_CONFIG_FILE=/run/host-pip/pip.conf PIP_PYTHON=/opt/venv/bin/python
# python3: the registry base has `python` too, a base bootstrapped from Debian has python3 only
RUN python3 -m venv /opt/pip \
    && python3 -m venv --without-pip /opt/venv
# The dependencies first, read from pyproject.toml alone, into a layer that a change of the code
# leaves cached. Then out with what serving never runs (prune.py says what and why: the other
# Pythons' server stubs, OpenVINO's GPU/NPU plugins and non-ONNX readers, test suites). The
# project itself goes beside it, in /opt/project (the .pth puts it on the path), so that a change
# of the code rebuilds only that small layer, never the dependencies'.
COPY pyproject.toml deploy/docker/requirements.py deploy/docker/prune.py /src/
RUN python3 /src/requirements.py /src/pyproject.toml serve >/tmp/requirements.txt \
    && /opt/pip/bin/pip install --requirement /tmp/requirements.txt \
    && /opt/venv/bin/python /src/prune.py /opt/venv \
    && echo /opt/project >"$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/ser_triton.pth"
# .dockerignore admits only the installable project
COPY . /src
RUN /opt/pip/bin/pip install "/src[serve]" --no-deps --target /opt/project \
    && /opt/venv/bin/python -c "import ser_triton.serving.launcher"

FROM ${PYTHON_IMAGE}
# tini reaps the Python stubs that a crashed tritonserver leaves to PID 1 and forwards SIGTERM.
# nginx is the edge: it runs as the image's user with a read-only root filesystem, writing only
# into its work folder under $TMPDIR (the edge's config names every temp path and the pid file
# there, and nginx is started with -e for the error log), so the package's /var/lib/nginx and
# /var/log/nginx are never used, nor its config under /etc/nginx.
# No setuid or setgid programs (su, passwd, mount...): nothing here may gain privileges, in a pod
# with allowPrivilegeEscalation false or a container run without no-new-privileges alike.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini nginx \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/ser ser \
    && find / -xdev -type f -perm /6000 -exec chmod ug-s {} +
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/project /opt/project
# The Python stubs find their packages through the first python3 on PATH: the venv's
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp
USER 10001:10001
WORKDIR /home/ser
EXPOSE 8000 8001 8002
# through the edge, as clients see it (health needs no client key)
HEALTHCHECK --interval=10s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]
ENTRYPOINT ["tini", "--", "python", "-m", "ser_triton.serving.launcher"]
# --timeout: models that load for minutes; the server's log goes to the container's log (stdout);
# gRPC connections close after 5 minutes, as on the GPU pods, so that clients balancing over a
# headless Service find replicas the autoscaler added
CMD ["--host", "0.0.0.0", "--repository", "/models", "--timeout", "600", "--log-file", "-", \
     "--server-arg=--grpc-max-connection-age=300000", "--server-arg=--grpc-max-connection-age-grace=60000"]
