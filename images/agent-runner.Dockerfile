# The default agent image (agentflow.api.models.DEFAULT_AGENT_IMAGE): runs one step attempt
# with `python -m agentflow.runner`, configured by the AGENTFLOW_* environment the operator sets.
# Build from the repository root:
#   docker build -f images/agent-runner.Dockerfile -t agentflow/agent-runner:0.1.0 .
# `make images` builds it without a registry or a package index (see images/README.md).
#
# The base is pinned by tag here.  For reproducible builds pin it by digest as well, e.g.
#   --build-arg PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.12-slim-bookworm` prints the current digest).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# The builder stage's base.  Builder and runtime must have the same Python, as the virtualenv is
# copied between them: by default the builder is PYTHON_IMAGE itself and pip uses the package
# index; `make images` passes PYTHON_IMAGE plus a layer of wheels built on the host, with
# PIP_NO_INDEX and PIP_FIND_LINKS set, for a build that reaches no index.
ARG BUILDER_IMAGE=${PYTHON_IMAGE}

# The requirement list on its own, for the dependency layer of the builder stage to copy: that
# layer is then rebuilt when the list changes, not on every edit of pyproject.toml (its version,
# its tool settings).  The list is the `agent-runner` dependency group.
FROM ${BUILDER_IMAGE} AS requirements
COPY pyproject.toml /src/
RUN python3 -c 'import tomllib; print(*tomllib.load(open("/src/pyproject.toml", "rb"))["dependency-groups"]["agent-runner"], sep="\n")' > /requirements.txt

FROM ${BUILDER_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first, from the list alone: no source is copied before they are installed, so a
# source change rebuilds only the layers below.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/agentflow \
 && /opt/agentflow/bin/pip install --requirement /tmp/requirements.txt
# Then the operator's wheel without its dependencies: the runner uses only its API models and
# report contract, so kopf, the kubernetes client, the CLI's typer and rich and the rest stay out
# (pip check would name them, so the build imports the runner instead).  The wheel's `agentflow`
# and `kubectl-agentflow` commands cannot run without them and are removed; so is pip.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/agentflow/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/agentflow/bin/pip install --no-deps /wheels/agentflow_operator-*.whl \
 && /opt/agentflow/bin/python -c 'import agentflow.runner' \
 && rm /opt/agentflow/bin/agentflow /opt/agentflow/bin/kubectl-agentflow \
 && /opt/agentflow/bin/pip uninstall --yes pip setuptools

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
