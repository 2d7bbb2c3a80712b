# syntax=docker/dockerfile:1
# The CPU image: the same bundled Triton server as `make serve` (the nvidia-pytriton wheel's
# tritonserver, Python-backend steps running ONNX Runtime), started by the project's launcher on
# all interfaces. Serves a repository exported with the default TARGET=cpu. As `make serve`, the
# launcher puts its edge (NGINX, serving/edge.py) on the public ports 8000/8001 and the server on
# loopback ports behind it, so a container run on its own is filtered and bounded too; metrics
# stay on the server (8002). The Kubernetes edge (deploy/kubernetes/edge) runs this image as well,
# with the command `python -m ser_triton.serving.edge`.
#
#   docker build -f deploy/docker/cpu.Dockerfile -t ser-triton-cpu .
#   docker run --rm --shm-size=1g -p8000:8000 -p8001:8001 -p8002:8002 \
#     -v "$PWD/model_repository:/models:ro" ser-triton-cpu
#
# The model repository is not in the image: mount it at /models (a volume, or a directory that an
# init container filled from object storage; see deploy/kubernetes).
# The wheel's server needs glibc >= 2.35: Debian bookworm has 2.36.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
# .dockerignore admits only the installable project
COPY . /src
RUN /opt/venv/bin/pip install "/src[serve]"

FROM ${PYTHON_IMAGE}
# tini reaps the Python stubs that a crashed tritonserver leaves to PID 1 and forwards SIGTERM.
# nginx is the edge: it runs as the image's user with a read-only root filesystem, writing only
# into its work folder under $TMPDIR (the edge's config names every temp path and the pid file
# there, and nginx is started with -e for the error log), so the package's /var/lib/nginx and
# /var/log/nginx are never used, nor its config under /etc/nginx.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini nginx \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/ser ser
COPY --from=build /opt/venv /opt/venv
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
