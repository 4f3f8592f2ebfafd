# syntax=docker/dockerfile:1
# The default agent image (agentflow.api.models.DEFAULT_AGENT_IMAGE): runs one step attempt
# with `python -m agentflow.runner`, configured by the AGENTFLOW_* environment the operator sets.
# Build from the repository root:
#   docker build -f images/agent-runner.Dockerfile -t agentflow/agent-runner:0.1.0 .
#
# The base is pinned by tag here.  For reproducible builds pin it by digest as well, e.g.
#   --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.12-slim-bookworm` prints the current digest).
# Builder and runtime must use the same base: the virtualenv is copied between them.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN python -m pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/agentflow \
 && /opt/agentflow/bin/pip install --no-index --find-links /wheels agentflow-operator \
 && /opt/agentflow/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="agentflow-agent-runner" \
      org.opencontainers.image.description="The agentflow agent runner: one workflow step per container" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/agentflow /opt/agentflow
ENV PATH=/opt/agentflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Agents work in a scratch directory owned by the step user.
WORKDIR /workspace
RUN chown 65532:65532 /workspace
USER 65532:65532
ENTRYPOINT ["python", "-m", "agentflow.runner"]
