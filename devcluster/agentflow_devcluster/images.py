"""Which container images the local node can run, and how a container becomes a host process.

The local node has no container runtime: it runs a container as a process on the host.  That
only works for images whose behaviour the host can reproduce, so the node knows a short, fixed
table of images.  Every other image is "not available on the local node": the container never
starts and waits with ``ErrImagePull``/``ImagePullBackOff``, as it would on a real node whose
registry does not have the image.

======================================  =====================  =====================  ============
repository (any tag or digest)          entrypoint             default command        ``python``
======================================  =====================  =====================  ============
``agentflow/agent-runner`` (any         ``python -m            (none)                 mapped
registry)                               agentflow.runner``
``busybox``                             (none)                 ``sh``                 no
``alpine``                              (none)                 ``/bin/sh``            no
``debian``, ``ubuntu``                  (none)                 ``bash``               no
``python``                              (none)                 ``python3``            mapped
======================================  =====================  =====================  ============

The base images are matched on Docker Hub only: no registry, or ``docker.io`` (also
``index.docker.io``/``registry-1.docker.io``), with or without ``library/``.

The command line follows Kubernetes' rules: ``command`` replaces the image's entrypoint, ``args``
replace its default command, and a ``command`` without ``args`` drops the default command.  The
program then comes from the host (``sh``, ``sleep``, ``/bin/sh`` ...).  In the images marked
"mapped", a program named ``python``, ``python3`` or ``python3.N`` is the node's own interpreter
(``sys.executable``), so that the agent runner and Python tools see the project's packages.

This module is pure: it reads nothing and starts nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

RUNNER_REPOSITORY = "agentflow/agent-runner"
RUNNER_MODULE = "agentflow.runner"
DOCKER_HUB_REGISTRIES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_PYTHON_PROGRAM = re.compile(r"^python(3(\.\d+)?)?$")


@dataclass(frozen=True)
class ImageReference:
    """An image reference split into its parts (``registry`` is None for Docker Hub shorthand)."""

    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class LocalImage:
    """How the local node runs one known image."""

    name: str
    entrypoint: tuple[str, ...]
    default_command: tuple[str, ...]
    maps_python: bool


class ImageNotAvailableError(Exception):
    """The image is not one the local node can run."""

    def __init__(self, image: str) -> None:
        self.image = image
        super().__init__(
            f'image "{image}" is not available on the local node (known images: {known_images()})'
        )


_RUNNER = LocalImage(
    name=RUNNER_REPOSITORY,
    entrypoint=("python", "-m", RUNNER_MODULE),
    default_command=(),
    maps_python=True,
)

BASE_IMAGES: dict[str, LocalImage] = {
    "busybox": LocalImage("busybox", (), ("sh",), maps_python=False),
    "alpine": LocalImage("alpine", (), ("/bin/sh",), maps_python=False),
    "debian": LocalImage("debian", (), ("bash",), maps_python=False),
    "ubuntu": LocalImage("ubuntu", (), ("bash",), maps_python=False),
    "python": LocalImage("python", (), ("python3",), maps_python=True),
}


def known_images() -> str:
    """The table in one line, for error messages."""
    return ", ".join([f"{RUNNER_REPOSITORY}:<any tag>", *BASE_IMAGES])


def parse_image(image: str) -> ImageReference:
    """Split ``[registry/]repository[:tag][@digest]`` the way container runtimes do.

    The first path component is a registry when it contains a ``.`` or a ``:`` or is
    ``localhost``; otherwise the reference is Docker Hub shorthand.
    """
    rest, _, digest = image.partition("@")
    registry: str | None = None
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first, remainder
    tag: str | None = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
    return ImageReference(
        registry=registry, repository=rest, tag=tag or None, digest=digest or None
    )


def lookup_image(image: str) -> LocalImage:
    """The table entry for ``image``; raises :class:`ImageNotAvailableError` when there is none."""
    ref = parse_image(image.strip())
    if ref.repository == RUNNER_REPOSITORY:
        return _RUNNER
    if ref.registry is None or ref.registry in DOCKER_HUB_REGISTRIES:
        name = ref.repository.removeprefix("library/")
        if name in BASE_IMAGES:
            return BASE_IMAGES[name]
    raise ImageNotAvailableError(image)


def container_argv(
    image: str,
    command: Sequence[str] | None,
    args: Sequence[str] | None,
    python: str,
) -> list[str]:
    """The host command line for a container (Kubernetes' command/args rules, see above).

    ``python`` is the interpreter that stands in for ``python``/``python3`` in mapped images.
    Raises :class:`ImageNotAvailableError` for an unknown image and ``ValueError`` when the
    result would be empty (the container has nothing to run).
    """
    local = lookup_image(image)
    if command:
        argv = [*command, *(args or ())]
    else:
        argv = [*local.entrypoint, *(args if args else local.default_command)]
    if not argv:
        raise ValueError(f'image "{image}" has no default command and the container sets none')
    if local.maps_python and _PYTHON_PROGRAM.match(PurePosixPath(argv[0]).name):
        argv[0] = python
    return argv


# Kubernetes expands $(VAR) in env values, command and args: `$$` escapes, unknown names stay.
_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")


def expand_references(text: str, env: dict[str, str]) -> str:
    """Expand ``$(NAME)`` from ``env`` like the kubelet: ``$$`` is a literal ``$``, and a
    reference to an undefined name is left as it is."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)
