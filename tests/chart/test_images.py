"""The Dockerfiles in images/, parsed and checked for structure without a container engine: a
requirements, a builder and a runtime stage, the pinned base, dependencies installed from their
list alone before any source is copied, the non-root user the chart's securityContext expects,
an entrypoint that exists in the package, and COPY sources that exist in the build context (the
repository root) and that .dockerignore keeps.  tests/e2e/test_images.py builds the images and
runs them."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
BASE = "python:3.12-slim-bookworm"
KEYWORDS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
ENTRYPOINTS = {
    "operator.Dockerfile": ["agentflow", "operator"],
    "agent-runner.Dockerfile": ["python", "-m", "agentflow.runner"],
}
# The requirement list each image installs, as the requirements stage reads it from pyproject.toml.
REQUIREMENTS = {
    "operator.Dockerfile": '["project"]["dependencies"]',
    "agent-runner.Dockerfile": '["dependency-groups"]["agent-runner"]',
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args_before_from: dict[str, str]
    stages: list[Stage]
    comments: str
    first_line: str


def parse(path: Path) -> Dockerfile:
    """Instructions with line continuations joined; comments kept apart."""
    logical: list[str] = []
    comments: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line)
            continue
        if not line and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: a line continuation runs off the end"

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        assert keyword in KEYWORDS, f"{path.name}: unknown instruction {keyword!r}"
        rest = rest.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, f"{path.name}: cannot parse FROM {rest!r}"
            stages.append(Stage(base=m[1], name=m[2]))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: {keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    first_line = path.read_text().partition("\n")[0]
    return Dockerfile(args, stages, "\n".join(comments), first_line)


@pytest.fixture(params=sorted(ENTRYPOINTS), ids=lambda name: name.removesuffix(".Dockerfile"))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    name: str = request.param
    return name, parse(IMAGES / name)


def test_there_are_exactly_the_two_images() -> None:
    assert sorted(p.name for p in IMAGES.glob("*.Dockerfile")) == sorted(ENTRYPOINTS)


def test_multi_stage_build_on_the_pinned_base(dockerfile: tuple[str, Dockerfile]) -> None:
    _, df = dockerfile
    # The builder's base defaults to the runtime's: the virtualenv is copied between them.
    # `make images` passes both (hack/containers/images.sh).
    assert df.args_before_from == {"PYTHON_IMAGE": BASE, "BUILDER_IMAGE": "${PYTHON_IMAGE}"}
    assert [(s.base, s.name) for s in df.stages] == [
        ("${BUILDER_IMAGE}", "requirements"),
        ("${BUILDER_IMAGE}", "builder"),
        ("${PYTHON_IMAGE}", None),
    ]
    assert "sha256:" in df.comments, "the digest pinning note is missing"
    _, builder, runtime = df.stages
    assert any("pip wheel" in run for run in builder.all("RUN"))
    copies = runtime.all("COPY")
    assert copies and all(c.startswith("--from=builder ") for c in copies)
    # Nothing is downloaded into the runtime image.
    assert not any("pip" in run or "apt-get" in run for run in runtime.all("RUN"))
    assert not runtime.all("ADD")


def test_builds_offline_without_a_frontend_image(dockerfile: tuple[str, Dockerfile]) -> None:
    # A `# syntax=` directive makes BuildKit pull its frontend image from a registry; without
    # one BuildKit uses its built-in frontend and the legacy builder works the same.
    _, df = dockerfile
    assert not re.match(r"#\s*syntax\s*=", df.first_line, re.IGNORECASE)


def test_dependencies_are_installed_from_their_list_alone_before_the_sources_are_copied(
    dockerfile: tuple[str, Dockerfile],
) -> None:
    """So that a source change, or any edit of pyproject.toml that leaves the requirement list
    as it is, rebuilds only the project's layer, not the dependencies'."""
    name, df = dockerfile
    requirements, builder, _ = df.stages
    # The requirements stage turns pyproject.toml into the list, and makes nothing else.
    steps = [(kw, args) for kw, args in requirements.instructions if kw in ("COPY", "RUN")]
    assert steps[0] == ("COPY", "pyproject.toml /src/")
    ((keyword, listing),) = steps[1:]
    assert keyword == "RUN" and "tomllib" in listing and listing.endswith("> /requirements.txt")
    assert f"{REQUIREMENTS[name]}, sep=" in listing
    # The builder copies only that list before it installs the dependencies.
    steps = [(kw, args) for kw, args in builder.instructions if kw in ("COPY", "RUN")]
    (first_copy, deps_run), rest = steps[:2], steps[2:]
    assert first_copy == ("COPY", "--from=requirements /requirements.txt /tmp/requirements.txt")
    assert deps_run == ("RUN", deps_run[1]) and "--requirement /tmp/requirements.txt" in deps_run[1]
    assert ("COPY", "operator/ operator/") in rest
    *_, (keyword, project_run) = rest
    assert keyword == "RUN"
    assert "pip wheel --no-deps" in project_run and "pip install --no-deps" in project_run


def test_runs_as_the_non_root_user_the_chart_expects(dockerfile: tuple[str, Dockerfile]) -> None:
    _, df = dockerfile
    runtime = df.stages[-1]
    users = runtime.all("USER")
    assert users == ["65532:65532"]
    # USER comes after every RUN, so nothing after it runs as root.
    keywords = [kw for kw, _ in runtime.instructions]
    assert keywords.index("USER") > max(
        (i for i, kw in enumerate(keywords) if kw == "RUN"), default=-1
    )


def test_entrypoint_exists_in_the_package(dockerfile: tuple[str, Dockerfile]) -> None:
    name, df = dockerfile
    (entrypoint,) = df.stages[-1].all("ENTRYPOINT")
    argv = json.loads(entrypoint)  # exec form: no shell between the runtime and Python
    assert argv == ENTRYPOINTS[name]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    if argv[0] == "agentflow":
        assert project["scripts"]["agentflow"] == "agentflow.cli:app"
    else:
        module = argv[2]
        assert importlib.util.find_spec(module) is not None, f"{module} does not exist"


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_copy_sources_exist_in_the_build_context(dockerfile: tuple[str, Dockerfile]) -> None:
    name, df = dockerfile
    ignored = _dockerignore()
    sources: list[str] = []
    for stage in df.stages[:-1]:
        for copy in stage.all("COPY"):
            *copied, _dest = shlex.split(copy)
            if not copied[0].startswith("--from="):
                sources += copied
    for source in sources:
        assert not source.startswith("--"), source
        assert (REPO / source).exists(), f"{name}: COPY source {source} is missing"
        top = source.rstrip("/").split("/")[0]
        assert not any(fnmatch.fnmatch(top, p) for p in ignored), f".dockerignore drops {source}"
    # The build installs the project, whose metadata names its readme.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["readme"] in sources


def test_the_context_leaves_out_the_venv_and_local_state() -> None:
    ignored = set(_dockerignore())
    assert {".git", ".venv", ".agentflow", "build", "**/__pycache__"} <= ignored
