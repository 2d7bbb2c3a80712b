# ser-triton: export the research model, serve it on Triton, classify audio, evaluate, benchmark it.
# Every target runs inside the project's virtualenv ($(VENV)), which `make setup` creates.

PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
PRESET     ?= pretrained
TARGET     ?= cpu
PRECISION  ?= fp32
CHECKPOINT ?=
REPOSITORY ?= model_repository
HOST       ?= 127.0.0.1
# defaults of ser_triton.core.contract
HTTP_PORT  ?= 8000
GRPC_PORT  ?= 8001
METRICS_PORT ?= 8002
REPLICAS   ?= 1
# the edge's client keys (a file, one key a line) and TLS certificate and key (PEM files)
CLIENT_KEYS ?=
TLS_CERTIFICATE ?=
TLS_KEY    ?=
SERVER_ARGS ?=
EXPORT_ARGS ?=
STEPS_ARGS ?=
BENCH_ARGS ?=
DATA       ?=
EVALUATE_ARGS ?=
# ser-train's flags: the split (--test-speakers A,B, --test-sessions N, --folds sessions), --recipe, --map ...
TRAIN_ARGS ?=
PYTEST_ARGS ?=

MODEL_FLAGS = --preset $(PRESET) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))
PORT_FLAGS  = --host $(HOST) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)
SERVER_FLAGS = --replicas $(REPLICAS) $(foreach flag,$(SERVER_ARGS),--server-arg=$(flag)) \
	$(if $(CLIENT_KEYS),--client-keys $(CLIENT_KEYS)) $(if $(TLS_CERTIFICATE),--tls-certificate $(TLS_CERTIFICATE)) \
	$(if $(TLS_KEY),--tls-key $(TLS_KEY))

.PHONY: setup balancer browser export steps serve demo evaluate train test bench clean

setup: $(VENV)/.installed balancer browser

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ser_triton.serving.perf_analyzer
	touch $@

# The edge of `make serve` (it bounds and filters every request, and balances over REPLICAS=N):
# NGINX, from the system's packages. Installed when missing and we are root (CI, containers);
# otherwise say how.
balancer:
	@PATH="$$PATH:/usr/sbin:/sbin" command -v nginx >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "make setup: installing nginx (the edge of make serve)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; \
	else \
		echo "make setup: nginx is missing: make serve puts it in front of the server as its edge, and the" \
		     "tests need it; install it as root: apt-get install nginx" >&2; \
	fi

# The browser tests (tests/test_browser.py) drive Debian's Chromium, headless, through its
# chromedriver (Selenium, from the test extra, never downloads a driver): installed when missing and
# we are root, as nginx; otherwise say how (those tests then skip, saying so, except under CI=true).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "make setup: installing chromium and chromium-driver (the browser tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver; \
	else \
		echo "make setup: chromium or its driver is missing: the browser tests drive them; install them as" \
		     "root: apt-get install chromium chromium-driver" >&2; \
	fi

export: setup
	$(PY) -m ser_triton.export $(MODEL_FLAGS) --target $(TARGET) --precision $(PRECISION) --out $(REPOSITORY) $(EXPORT_ARGS)

steps: setup
	$(PY) -m ser_triton.export.refresh --repository $(REPOSITORY) $(STEPS_ARGS)

serve: setup
	$(PY) -m ser_triton.serving.launcher --repository $(REPOSITORY) $(PORT_FLAGS) $(SERVER_FLAGS)

demo: setup
	$(PY) -m ser_triton.export $(MODEL_FLAGS) --fallback-preset tiny --out $(REPOSITORY)
	$(PY) -m ser_triton.serving.demo --repository $(REPOSITORY) $(PORT_FLAGS)

evaluate: setup
	@test -n "$(DATA)" || { echo "make evaluate: give the labelled data: DATA=manifest.csv (path,label[,text]) or DATA=IEMOCAP_full_release" >&2; exit 2; }
	$(PY) client/evaluate.py $(DATA) $(EVALUATE_ARGS)

# ser-train into checkpoints/ (--out DIR elsewhere): the research checkpoint `make export CHECKPOINT=` serves
# (docs/training.md); PRESET= and CHECKPOINT= as for make export.
train: setup
	@test -n "$(DATA)" || { echo "make train: give the labelled data (DATA=manifest.csv with path,label,speaker" \
		"columns, or DATA=IEMOCAP_full_release) and its test speakers (TRAIN_ARGS=\"--test-sessions 5\")" >&2; exit 2; }
	$(PY) -m ser_triton.train $(DATA) $(MODEL_FLAGS) $(TRAIN_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m ser_triton.bench $(BENCH_ARGS)

clean:
	rm -rf $(REPOSITORY)/*/ $(REPOSITORY)/export_report.json bench/work

# ------------------------------------------------------------------------------------------------
# Ship: the CPU image, run as a container and as the Kubernetes pod spec, with podman
# (docs/ship.md). `make setup` installs podman and its configuration where they are missing and
# it runs as root (deploy/podman/setup.sh), as it installs nginx.
#   make image                       deploy/docker/cpu.Dockerfile -> $(IMAGE), layers cached
#   make kube-play                   overlays/local's server pod on HTTP_PORT, GRPC_PORT, METRICS_PORT
#   make kube-down                   removes it
# ------------------------------------------------------------------------------------------------
IMAGE      ?= ser-triton-cpu:dev
# e.g. IMAGE_ARGS="--base python:3.11-slim-bookworm" to choose the base instead of letting make image
IMAGE_ARGS ?=
# e.g. KUBE_ARGS="--state /tmp/pod --name ser-triton-try" (kube-play and kube-down alike)
KUBE_ARGS  ?=
# the Python that runs the podman scripts: the virtualenv's where it exists, else the system's
# (make image needs only the standard library and reads the same pip configuration; kube-play
# needs PyYAML: the virtualenv's, or Debian's python3-yaml)
SHIP_PY     = $(if $(wildcard $(PY)),$(PY),$(PYTHON))

.PHONY: podman image kube-play kube-down

setup: podman

podman:
	@sh deploy/podman/setup.sh

image: podman
	@$(SHIP_PY) deploy/podman/image.py --tag $(IMAGE) $(IMAGE_ARGS)

kube-play: podman
	@$(SHIP_PY) deploy/podman/kube.py play --image $(IMAGE) --repository $(REPOSITORY) --host $(HOST) \
		--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT) $(KUBE_ARGS)

kube-down:
	@$(SHIP_PY) deploy/podman/kube.py down $(KUBE_ARGS)
