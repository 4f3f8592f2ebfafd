# The agentflow operator image: `agentflow operator` (see charts/agentflow).
# Build from the repository root:
#   docker build -f images/operator.Dockerfile -t agentflow/operator:0.1.0 .
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
# its tool settings).  The list is the operator's runtime dependencies.
FROM ${BUILDER_IMAGE} AS requirements
COPY pyproject.toml /src/
RUN python3 -c 'import tomllib; print(*tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' > /requirements.txt

FROM ${BUILDER_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first, from the list alone: no source is copied before they are installed, so a
# source change rebuilds only the layers below.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/agentflow \
 && /opt/agentflow/bin/pip install --requirement /tmp/requirements.txt
# Then the project itself (its dependencies are in already), and no pip in the runtime image.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/agentflow/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/agentflow/bin/pip install --no-deps /wheels/agentflow_operator-*.whl \
 && /opt/agentflow/bin/pip check \
 && /opt/agentflow/bin/pip uninstall --yes pip setuptools

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
