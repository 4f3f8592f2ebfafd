"""What each distribution ships and depends on, read from the wheels themselves.

The operator's wheel (the repository root, what both images install) carries the operator, the
CLI and the runner, and no dev-cluster code; agentflow-devcluster (``devcluster/``) carries the
local cluster and ``agentflow dev``.  Each wheel declares exactly the distributions its modules
import.  The agent-runner image installs the operator's wheel without its dependencies plus the
``agent-runner`` dependency group, which is exactly what the runner's modules import; the runner
then runs a script agent with nothing else on its path.  tests/e2e/test_images.py checks what the
images have installed.  The wheels are built offline, with the setuptools of the venv, from a copy
of what the Dockerfiles copy into the build.
"""

from __future__ import annotations

import ast
import email.message
import email.parser
import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.packaging import requirement_closure
from tests.unit.test_runner import SAMPLE, collect, runner_env

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DEVCLUSTER_PYPROJECT = tomllib.loads((REPO / "devcluster/pyproject.toml").read_text())
RUNNER_GROUP = "agent-runner"
# pydantic's compiled half: pydantic pins it to one version, so importing it (for the types of
# the JSON-schema generator's hooks) depends on nothing that pydantic does not bring.
SAME_PROJECT = {"pydantic-core": "pydantic"}


@dataclass(frozen=True)
class Wheel:
    path: Path
    metadata: email.message.Message
    modules: dict[str, str]  # dotted module name -> source

    @property
    def top_level(self) -> set[str]:
        return {name.partition(".")[0] for name in self.modules}

    @property
    def requirements(self) -> list[Requirement]:
        return [Requirement(r) for r in self.metadata.get_all("Requires-Dist") or []]


def build_wheel(tmp: Path, sources: Iterable[str], project_dir: str = ".") -> Wheel:
    """The wheel of the project in ``project_dir`` of a copy of ``sources`` (paths below the
    repository), built offline."""
    project = tmp / "project"
    for source in sources:
        if (REPO / source).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
            shutil.copytree(REPO / source, project / source, ignore=ignore)
        else:
            project.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / source, project / source)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(tmp / "wheels"), str(project / project_dir)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (path,) = (tmp / "wheels").glob("*.whl")
    modules: dict[str, str] = {}
    metadata = ""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            file = PurePosixPath(name)
            if file.parent.name.endswith(".dist-info") and file.name == "METADATA":
                metadata = archive.read(name).decode()
            elif file.suffix == ".py":
                parts = file.with_suffix("").parts
                dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                modules[dotted] = archive.read(name).decode()
    return Wheel(path, email.parser.Parser().parsestr(metadata), modules)


@pytest.fixture(scope="module")
def operator_wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    # What images/*.Dockerfile copy into the build before they build the wheel.
    return build_wheel(
        tmp_path_factory.mktemp("operator"), ["pyproject.toml", "README.md", "operator"]
    )


@pytest.fixture(scope="module")
def devcluster_wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    return build_wheel(tmp_path_factory.mktemp("devcluster"), ["devcluster"], "devcluster")


def imported_modules(source: str) -> set[str]:
    """Every module ``source`` imports, wherever in the code (lazy imports too), and for
    ``from M import N`` also ``M.N``, which may be a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, "the project uses absolute imports only"
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def external_distributions(wheel: Wheel, modules: Iterable[str]) -> set[str]:
    """The distributions (canonical names) that the given modules of the wheel import."""
    owners = importlib.metadata.packages_distributions()
    names: set[str] = set()
    for module in modules:
        for imported in imported_modules(wheel.modules[module]):
            top = imported.partition(".")[0]
            if top in sys.stdlib_module_names or top in wheel.top_level or top == "__future__":
                continue
            (owner,) = set(owners[top])
            name = canonicalize_name(owner)
            names.add(SAME_PROJECT.get(name, name))
    return names


def declared(requirements: Iterable[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements if r.marker is None}


def reachable(wheel: Wheel, start: Iterable[str]) -> set[str]:
    """The wheel's modules that importing ``start`` runs: their imports, and every package's
    ``__init__`` on the way, followed through the wheel."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name in wheel.modules and name not in seen:
                seen.add(name)
                todo.extend(imported_modules(wheel.modules[name]))
    return seen


def runner_group() -> list[str]:
    requirements: list[str] = PYPROJECT["dependency-groups"][RUNNER_GROUP]
    return requirements


def test_the_operator_wheel_carries_no_dev_cluster_module(operator_wheel: Wheel) -> None:
    assert operator_wheel.top_level == {"agentflow"}
    dev_cluster = {
        name for name in operator_wheel.modules
        if name.startswith("agentflow.localcluster") or name.endswith(".devenv")
    }  # fmt: skip
    assert not dev_cluster
    # Nothing the operator's wheel runs needs the certificates of the local cluster.
    assert "cryptography" not in declared(operator_wheel.requirements)


def test_the_dev_cluster_wheel_is_the_dev_cluster_and_agentflow_dev(
    devcluster_wheel: Wheel,
) -> None:
    assert devcluster_wheel.top_level == {"agentflow_devcluster"}
    modules = {"node", "controlplane", "pki", "images", "devenv", "command"}
    assert {f"agentflow_devcluster.{name}" for name in modules} <= set(devcluster_wheel.modules)
    entry_points = DEVCLUSTER_PYPROJECT["project"]["entry-points"]["agentflow.commands"]
    assert entry_points == {"dev": "agentflow_devcluster.command:dev"}
    # It uses the operator's CLI modules, so it goes with the operator of its own version.
    version = PYPROJECT["project"]["version"]
    assert devcluster_wheel.metadata["Version"] == version
    (operator,) = [r for r in devcluster_wheel.requirements if r.name == "agentflow-operator"]
    assert str(operator.specifier) == f"=={version}"


@pytest.mark.parametrize("which", ["operator", "devcluster"])
def test_each_wheel_declares_exactly_the_distributions_its_modules_import(
    which: str, request: pytest.FixtureRequest
) -> None:
    wheel: Wheel = request.getfixturevalue(f"{which}_wheel")
    imported = external_distributions(wheel, wheel.modules)
    assert declared(wheel.requirements) == imported


def test_the_agent_runner_group_is_what_the_runner_imports(operator_wheel: Wheel) -> None:
    runner = [name for name in operator_wheel.modules if name.startswith("agentflow.runner")]
    loaded = reachable(operator_wheel, runner)
    # The runner, the API models and the report contract: no engine, no client, no CLI.
    assert {m for m in loaded if not m.startswith("agentflow.runner")} == {
        "agentflow", "agentflow.api", "agentflow.api.models", "agentflow.report",
    }  # fmt: skip
    group = [Requirement(r) for r in runner_group()]
    assert declared(group) == external_distributions(operator_wheel, loaded)
    # The group's version ranges are the operator's own, so both images get the same pydantic.
    operator_ranges = {r.name: r.specifier for r in operator_wheel.requirements}
    assert all(operator_ranges[r.name] == r.specifier for r in group)


def _installed_requires(name: str) -> list[str]:
    return importlib.metadata.requires(name) or []


def test_the_runner_runs_a_script_agent_with_only_the_agent_runner_group_on_its_path(
    operator_wheel: Wheel, tmp_path: Path
) -> None:
    """As in the agent-runner image: the operator's wheel without its dependencies, plus the
    group's distributions, and no site-packages (so no kopf, kubernetes, typer or rich)."""
    site = tmp_path / "site"
    with zipfile.ZipFile(operator_wheel.path) as archive:
        archive.extractall(site)
    closure = requirement_closure(runner_group(), _installed_requires)
    assert "pydantic" in closure and "kopf" not in closure
    for name in closure:
        distribution = importlib.metadata.distribution(name)
        for top in {file.parts[0] for file in distribution.files or []}:
            if not (top.endswith(".dist-info") or top == ".." or (site / top).exists()):
                (site / top).symlink_to(Path(str(distribution.locate_file(top))))
    env = runner_env(tmp_path, PYTHONPATH=str(site), AGENTFLOW_SCRIPT_REPORT=SAMPLE)
    completed = subprocess.run(
        [sys.executable, "-S", "-m", "agentflow.runner"],
        env=env, capture_output=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    run = collect(tmp_path, completed.returncode, completed.stdout, completed.stderr)
    assert run.returncode == 0, run.stderr
    assert run.report == SAMPLE
    assert run.result.summary.startswith("Validated Bangladesh VAT")
    assert run.result.status == "success"
    # The runner's path really lacks the operator's other dependencies.
    missing = subprocess.run(
        [sys.executable, "-S", "-c", "import agentflow.runner, kopf"],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert "No module named 'kopf'" in missing.stderr
