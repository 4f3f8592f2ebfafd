#!/usr/bin/env bash
# Builds the project's two images with the local Docker engine, for `make images` and the e2e
# tests, on a machine where no container registry can be reached and builds cannot reach the
# package index (only the host's pip can):
#   agentflow/operator:<version>      from images/operator.Dockerfile (the chart's default image)
#   agentflow/agent-runner:<version>  from images/agent-runner.Dockerfile (DEFAULT_AGENT_IMAGE)
# <version> is pyproject.toml's.  How:
#   1. hack/containers/engine.sh: a Docker engine answers;
#   2. hack/containers/debian.sh: a Debian bookworm base with python3, built from the Debian
#      archive (the runtime base of both images, PYTHON_IMAGE);
#   3. a wheelhouse: the host's pip downloads wheels of the dependencies and of the build
#      backend for that base's Python and glibc (cached in $AGENTFLOW_CACHE/wheelhouse/, keyed by
#      pyproject.toml and the base), and a "builder" image is the base plus those wheels with
#      PIP_NO_INDEX/PIP_FIND_LINKS set (BUILDER_IMAGE);
#   4. docker build of both Dockerfiles with the legacy builder (DOCKER_BUILDKIT=0), which needs
#      no frontend image from a registry.  The project's own wheel is built in the build, from
#      the sources, with the backend from the wheelhouse: a source change rebuilds one layer.
# Every step is cached; with nothing changed this takes seconds.
# usage: hack/containers/images.sh    prints the two image references, operator first
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/hack/containers
cache=${AGENTFLOW_CACHE:-$HOME/.cache/agentflow}
python=${PYTHON:-python3}
log() { printf '[images] %s\n' "$*" >&2; }
export DOCKER_BUILDKIT=0

"$here/engine.sh"
cd "$repo"

version=$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
base=$("$here/debian.sh" debian-python bookworm python3 python3-venv ca-certificates)
base_id=$(docker image inspect --format '{{.Id}}' "$base")

# What the wheels must fit: the base's CPython version, glibc and machine, e.g. "311 2_36 x86_64".
target_file=$cache/wheelhouse/targets/${base_id#sha256:}
if [ ! -s "$target_file" ]; then
  mkdir -p "$(dirname "$target_file")"
  docker run --rm --network none --entrypoint python3 "$base" -c '
import platform, sys
libc, glibc = platform.libc_ver()
assert libc == "glibc", libc
print("%d%d" % sys.version_info[:2], glibc.replace(".", "_"), platform.machine())' >"$target_file.tmp"
  mv "$target_file.tmp" "$target_file"
fi
read -r py_version glibc machine <"$target_file"

# The wheelhouse is keyed by what it holds: the requirements in pyproject.toml (the runtime
# dependencies and the build backend the project's wheel is built with) and the target.
requirements=$("$python" -c '
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
print(*project["project"]["dependencies"], *project["build-system"]["requires"], sep="\n")')
key=$(printf '%s\n' "$requirements" "cp$py_version manylinux_${glibc}_$machine v1" | sha256sum | cut -c1-12)
wheelhouse=$cache/wheelhouse/$key
if [ ! -f "$wheelhouse/.complete" ]; then
  log "downloading wheels for cp$py_version manylinux_${glibc}_$machine into $wheelhouse"
  mkdir -p "$cache/wheelhouse"
  tmp=$(mktemp -d "$cache/wheelhouse/.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  printf '%s\n' "$requirements" >"$tmp/requirements.txt"
  # Every manylinux tag that glibc accepts (pip does not widen --platform by itself), and
  # --only-binary: nothing is compiled on this host for another system.
  platforms=()
  for ((minor = ${glibc#2_}; minor >= 5; minor--)); do
    platforms+=(--platform "manylinux_2_${minor}_$machine")
  done
  platforms+=(--platform "manylinux2014_$machine" --platform "manylinux2010_$machine" --platform "manylinux1_$machine")
  "$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    "${platforms[@]}" --implementation cp \
    --python-version "$py_version" --abi "cp$py_version" \
    --dest "$tmp/wheels" --requirement "$tmp/requirements.txt" >&2
  rm -rf "$wheelhouse"
  mv "$tmp" "$wheelhouse"
  trap - EXIT
  touch "$wheelhouse/.complete"
  # Older wheelhouses are for older requirements or another base.
  find "$cache/wheelhouse" -mindepth 1 -maxdepth 1 -type d -name '????????????' \
    ! -name "$key" -exec rm -rf {} +
fi

builder="agentflow.local/python-wheelhouse:$(printf '%s|%s' "$base_id" "$key" | sha256sum | cut -c1-12)"
if ! docker image inspect "$builder" >/dev/null 2>&1; then
  log "building $builder ($base with the wheelhouse)"
  printf '%s\n' \
    "FROM $base" \
    'COPY . /wheelhouse/' \
    'ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse' |
    docker build --quiet --tag "$builder" --file - "$wheelhouse/wheels" >/dev/null
fi

refs=()
for image in operator agent-runner; do
  ref="agentflow/$image:$version"
  log "building $ref"
  previous=$(docker image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)
  docker build --file "images/$image.Dockerfile" \
    --build-arg "PYTHON_IMAGE=$base" --build-arg "BUILDER_IMAGE=$builder" \
    --tag "$ref" . >&2
  # The image this one replaces, unless something still uses it: each holds a whole virtualenv.
  if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$ref")" ]; then
    docker rmi "$previous" >/dev/null 2>&1 || true
  fi
  refs+=("$ref")
done
printf '%s\n' "${refs[@]}"
