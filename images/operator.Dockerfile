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

FROM ${BUILDER_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first, so that source changes do not invalidate this layer: the requirements
# come from pyproject.toml alone, and no source is copied before they are installed.
COPY pyproject.toml ./
RUN python3 -m venv /opt/agentflow \
 && python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' > /tmp/requirements.txt \
 && /opt/agentflow/bin/pip install --requirement /tmp/requirements.txt
# Then the project itself (its dependencies are in already), and no pip in the runtime image.
COPY README.md ./
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
