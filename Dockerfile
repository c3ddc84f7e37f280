# syntax=docker/dockerfile:1
# serving on CPUs (laptops, CI): torch's CPU build and onnxruntime, versions from pyproject.toml.
#   docker build -t serving .
#   docker run -p 8001:8001 -p 8002:8002 -v "$PWD/models:/models" serving
# `Dockerfile.gpu` is this file with the GPU defaults below; tests/unit/test_dockerfile.py keeps them in step.
ARG BASE_IMAGE=ubuntu:24.04
ARG VARIANT=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# ---- build: a virtual environment with the pinned requirements, then the package itself
FROM ${BASE_IMAGE} AS build
ARG VARIANT
ARG TORCH_INDEX
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# The base image's tag pins Ubuntu's python3; apt versions move with security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
WORKDIR /src
# Requirements first: this layer is rebuilt only when pyproject.toml changes, not with every code change.
COPY pyproject.toml README.md ./
COPY deploy/docker/requirements.py deploy/docker/requirements.py
RUN python deploy/docker/requirements.py "$VARIANT" > requirements.txt \
 && pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} -r requirements.txt
COPY serving serving
RUN pip install --no-cache-dir --no-deps .

# ---- runtime: Python, the virtual environment and the health check; no compilers, no pip cache
FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 serving \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin serving
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /opt/serving/healthcheck.py
# A numeric user, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /opt/serving
# 8001 gRPC (inference, admin, grpc.health.v1, reflection), 8002 Prometheus /metrics.
EXPOSE 8001 8002
# The model repository is mounted here (read-write if operators change traffic splits through the admin API).
VOLUME ["/models"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python", "/opt/serving/healthcheck.py", "127.0.0.1:8001"]
# Exec form: the server is PID 1 and gets SIGTERM itself (stop accepting, finish requests, drain, unload).
# Arguments after the image name are appended, e.g. `--model-control-mode poll`; the last flag wins.
ENTRYPOINT ["serving", "serve", "--model-repository", "/models", "--load-model", "*", "--host", "0.0.0.0", "--grpc-port", "8001", "--metrics-port", "8002"]
