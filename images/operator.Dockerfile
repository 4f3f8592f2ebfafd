# syntax=docker/dockerfile:1
# The agentflow operator image: `agentflow operator` (see charts/agentflow).
# Build from the repository root:
#   docker build -f images/operator.Dockerfile -t agentflow/operator:0.1.0 .
#
# The base is pinned by tag here.  For reproducible builds pin it by digest as well, e.g.
#   --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.12-slim-bookworm` prints the current digest).
# Builder and runtime must use the same base: the virtualenv is copied between them.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first, so that source changes do not invalidate this layer.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN python -m pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/agentflow \
 && /opt/agentflow/bin/pip install --no-index --find-links /wheels agentflow-operator \
 && /opt/agentflow/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="agentflow-operator" \
      org.opencontainers.image.description="Runs multi-step AI-agent workflows as Kubernetes Jobs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/agentflow /opt/agentflow
ENV PATH=/opt/agentflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric non-root user, so that runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["agentflow", "operator"]
