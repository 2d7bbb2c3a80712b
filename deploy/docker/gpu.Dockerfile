# syntax=docker/dockerfile:1
# The GPU image: NVIDIA's Triton container (server 2.51.0, native onnxruntime and tensorrt
# backends) plus what the ensemble's Python-backend steps import, from the project's `steps`
# extra. Serves a repository exported with TARGET=onnxruntime or TARGET=tensorrt.
#
#   docker build -f deploy/docker/gpu.Dockerfile -t ser-triton-gpu .
#   docker run --rm --gpus all --shm-size=1g -p8000:8000 -p8001:8001 -p8002:8002 \
#     -v "$PWD/model_repository:/models:ro" ser-triton-gpu
#   docker run ... ser-triton-gpu python3 -m ser_triton.serving.admin tritonserver \
#     --model-repository=s3://bucket/model_repository ...
#
# The model repository is not in the image: mount it at /models, or give tritonserver an s3://,
# gs:// or as:// repository, which it reads natively (credentials from the environment).
#
# tritonserver runs through ser_triton.serving.admin (standard library only, installed with the project):
# it adds the flags that close the control plane (model-repository, logging, trace and
# shared-memory APIs) to every request (a header no client can send), or, where
# $SER_ADMIN_KEY_FILE names a key file (a mounted Secret), open it to that key, which every
# process that can list the node's processes then reads. No key is in the image. --model-control-mode=none (the default, said aloud): nothing here
# loads or reloads models at run time, so explicit control is not needed.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# .dockerignore admits only the installable project
COPY . /src
RUN python3 -m pip install "/src[steps]" \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/ser ser
ENV PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/ser
EXPOSE 8000 8001 8002
# ready, and every Python step still has its stub process: Triton's own health endpoints keep answering
# 200 after a stub died (ser_triton.serving.health), and with model control none nothing reloads it
HEALTHCHECK --interval=10s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-m", "ser_triton.serving.health", "--url", "127.0.0.1:8000"]
# The base image's entrypoint (/opt/nvidia/nvidia_entrypoint.sh) runs this command.
CMD ["python3", "-m", "ser_triton.serving.admin", "tritonserver", "--model-repository=/models", "--model-control-mode=none", \
     "--strict-readiness=true", "--exit-on-error=true"]
