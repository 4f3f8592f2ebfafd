"""The two images, built with hack/containers/images.sh (a no-op when they are up to date) and run
with Docker, with no Kubernetes in between.

The agent runner runs step attempts in a container made from the Job the operator builds
(:func:`agentflow.children.build_step_job`): its environment, its user, its read-only root
filesystem with an emptyDir at /tmp, its dropped capabilities and the termination-message file
the kubelet mounts at /dev/termination-log.  What it prints and writes there is checked against
the runner contract of docs/writing-agents.md.  The operator image starts as the chart's user
with the chart's securityContext.  Each image has installed the operator's wheel and exactly what
its requirement list pulls in (docs/development.md, Packaging).  A machine where no engine can be
had fails these tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.utils import canonicalize_name

from agentflow.api.models import DEFAULT_AGENT_IMAGE, AgentTemplate, EnvVar, Provider, StepResult
from agentflow.children import WorkflowRef, build_step_job
from agentflow.engine.types import CreateJob
from agentflow.report import (
    TERMINATION_MESSAGE_LIMIT,
    decode_termination_message,
    report_digest,
)
from tests.support.packaging import requirement_closure

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/agentflow"
USER = "65532:65532"
WORKFLOW = WorkflowRef(name="finance-feature", namespace="team-a", uid="uid-e2e")
# What the kubelet mounts for a container without terminationMessagePath.
TERMINATION_LOG = "/dev/termination-log"
# A restricted container the way the chart's operator Deployment sets it up.
OPERATOR_SECURITY = [
    "--rm", "--user", USER, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges", "--network", "none",
]  # fmt: skip


def _script(name: str, *args: str, timeout: float = 1800) -> str:
    result = subprocess.run(
        [str(REPO / "hack/containers" / name), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"hack/containers/{name} exited {result.returncode}:\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result.stdout


@dataclass(frozen=True)
class Images:
    operator: str
    runner: str


@pytest.fixture(scope="module")
def images() -> Images:
    _script("engine.sh", timeout=600)  # no engine: the tests fail here, saying why
    operator, runner = _script("images.sh").split()
    return Images(operator=operator, runner=runner)


def docker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], capture_output=True, env=env, timeout=300, check=False)


def inspect(image: str) -> dict[str, Any]:
    result = docker("image", "inspect", image)
    assert result.returncode == 0, result.stderr.decode()
    (config,) = json.loads(result.stdout)
    return dict(config["Config"])


def kubelet_expand(value: str, defined: dict[str, str]) -> str:
    """An env value as the kubelet passes it: ``$$`` is ``$``, ``$(NAME)`` an earlier variable."""

    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return defined.get(match[1], match[0])

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, value)


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: bytes
    stderr: str
    message: str  # what the container wrote to its termination-message file

    @property
    def result(self) -> StepResult:
        """The step's result as the operator reads it from the pod status."""
        return decode_termination_message(self.message)


def run_step(tmp_path: Path, image: str, prompt: str, env: dict[str, str], attempt: int = 1) -> Run:
    """One step attempt: ``docker run`` of the container in the operator's Job for it."""
    action = CreateJob(
        job_name=f"{WORKFLOW.name}-vat-check-1-1-{attempt}",
        step="vat-check",
        run=1,
        iteration=1,
        attempt=attempt,
        agent=AgentTemplate(
            name="finance-agent",
            provider=Provider.SCRIPT,
            image=image,
            env=[EnvVar(name=k, value=v) for k, v in env.items()],
        ),
        fallback=False,
        prompt=prompt,
        cache_key=None,
        timeout_seconds=60,
    )
    pod = build_step_job(WORKFLOW, action)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_sc, sc = pod["securityContext"], container["securityContext"]
    assert "command" not in container and "args" not in container  # the image's entrypoint

    user = sc.get("runAsUser", pod_sc["runAsUser"])
    group = sc.get("runAsGroup", pod_sc["runAsGroup"])
    flags = ["--rm", "--network", "none", "--user", f"{user}:{group}"]
    if sc["readOnlyRootFilesystem"]:
        flags.append("--read-only")
    for capability in sc["capabilities"]["drop"]:
        flags += ["--cap-drop", capability]
    if sc["allowPrivilegeEscalation"] is False:
        flags += ["--security-opt", "no-new-privileges"]
    # seccomp RuntimeDefault is Docker's default profile.
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        assert set(volumes[mount["name"]]) == {"name", "emptyDir"}, mount
        flags += ["--tmpfs", mount["mountPath"]]
    termination_log = tmp_path / f"termination-log-{attempt}"
    termination_log.touch()
    termination_log.chmod(0o666)
    path = container.get("terminationMessagePath", TERMINATION_LOG)
    flags += ["--volume", f"{termination_log}:{path}"]

    # The values travel in docker's own environment (`-e NAME`): any text, newlines included.
    docker_env = dict(os.environ)
    defined: dict[str, str] = {}
    for entry in container["env"]:
        assert set(entry) == {"name", "value"}, entry  # no secrets in these tests
        defined[entry["name"]] = docker_env[entry["name"]] = kubelet_expand(entry["value"], defined)
        flags += ["--env", entry["name"]]

    result = docker("run", *flags, container["image"], env=docker_env)
    return Run(
        exit_code=result.returncode,
        stdout=result.stdout,
        stderr=result.stderr.decode(errors="replace"),
        message=termination_log.read_text(encoding="utf-8"),
    )


def test_the_refs_are_the_charts_default_and_the_default_agent_image(images: Images) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert images.operator == f"{values['image']['repository']}:{chart['appVersion']}"
    assert chart["appVersion"] == version
    assert images.runner == DEFAULT_AGENT_IMAGE == f"agentflow/agent-runner:{version}"


@pytest.mark.parametrize("which", ["operator", "runner"])
def test_the_image_runs_as_65532_by_default(images: Images, which: str) -> None:
    image = getattr(images, which)
    # Numeric, so that the kubelet can check runAsNonRoot without /etc/passwd.
    assert inspect(image)["User"] == USER
    ids = "import os; print(os.getuid(), os.getgid())"
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", ids)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["65532", "65532"]


REPORT = """\
## Summary
{agent} checked the VAT rules for step {step}, attempt {attempt}: {prompt}

## Files Created/Modified
- Created: services/finance/test-validation.ts
- Modified: services/finance/vat.ts

## Metrics
- Tool calls: 5
- Files read: 12
- P95 latency ms: 180

## Status
success
"""


def test_a_step_succeeds_with_its_report_on_stdout_and_its_result_in_the_message(
    images: Images, tmp_path: Path
) -> None:
    # $HOME and $(AGENTFLOW_STEP) are data: the operator escapes them, the kubelet unescapes.
    prompt = "Validate VAT; keep $HOME and $(AGENTFLOW_STEP) as written"
    env = {"AGENTFLOW_SCRIPT_REPORT": REPORT, "AGENTFLOW_SCRIPT_TOKENS": "1200,345"}
    run = run_step(tmp_path, images.runner, prompt, env)
    assert run.exit_code == 0, run.stderr

    report = run.stdout.decode()
    summary = (
        "finance-agent checked the VAT rules for step vat-check, attempt 1: "
        "Validate VAT; keep $HOME and $(AGENTFLOW_STEP) as written"
    )
    assert report.startswith(f"## Summary\n{summary}\n")
    assert "- Input tokens: 1200\n- Output tokens: 345\n" in report

    message = json.loads(run.message)
    assert message["v"] == 1
    assert message["size"] == len(run.stdout)
    result = run.result
    assert result.status == "success"
    assert result.summary == summary
    assert [(a.action, a.path) for a in result.artifacts] == [
        ("created", "services/finance/test-validation.ts"),
        ("modified", "services/finance/vat.ts"),
    ]
    metrics = result.metrics
    assert (metrics.tool_calls, metrics.files_read) == (5, 12)
    assert (metrics.input_tokens, metrics.output_tokens) == (1200, 345)
    assert metrics.extra == {"p95LatencyMs": 180}
    assert result.digest == report_digest(run.stdout)
    assert result.truncated is False


def test_a_scripted_failure_exits_1_and_says_why_then_the_retry_succeeds(
    images: Images, tmp_path: Path
) -> None:
    env = {"AGENTFLOW_SCRIPT_FAIL": "attempts<=1"}
    failed = run_step(tmp_path, images.runner, "Validate VAT", env, attempt=1)
    reason = "scripted failure on attempt 1 (AGENTFLOW_SCRIPT_FAIL=attempts<=1)"
    assert failed.exit_code == 1
    assert f"agentflow-runner: {reason}" in failed.stderr
    assert failed.result.status == "failure"
    assert failed.result.summary == reason

    retried = run_step(tmp_path, images.runner, "Validate VAT", env, attempt=2)
    assert retried.exit_code == 0, retried.stderr
    assert retried.result.status == "success"
    assert retried.result.summary == (
        "finance-agent completed step vat-check (iteration 1, attempt 2): Validate VAT"
    )


def test_a_large_report_stays_whole_on_stdout_and_the_message_fits(
    images: Images, tmp_path: Path
) -> None:
    env = {"AGENTFLOW_SCRIPT_OUTPUT_BYTES": "200000"}
    run = run_step(tmp_path, images.runner, "Profile the ledger service", env)
    assert run.exit_code == 0, run.stderr
    assert len(run.stdout) > 200_000
    assert len(run.message.encode()) <= TERMINATION_MESSAGE_LIMIT
    result = run.result
    # truncated: the operator reads the whole report from the pod log.
    assert result.truncated is True
    assert result.status == "success"
    assert json.loads(run.message)["size"] == len(run.stdout)
    assert result.digest == report_digest(run.stdout)


def test_the_operator_starts_as_65532_with_the_charts_security_context(images: Images) -> None:
    config = inspect(images.operator)
    assert config["Entrypoint"] == ["agentflow", "operator"]
    assert "8080/tcp" in config["ExposedPorts"]

    result = docker("run", *OPERATOR_SECURITY, images.operator, "--help")
    assert result.returncode == 0, result.stderr.decode()
    assert "Run the operator" in result.stdout.decode()

    # Everything `agentflow operator` imports before it connects: kopf and the handlers.
    imports = "import kopf, agentflow.main, agentflow.handlers; print('imported')"
    result = docker(
        "run", *OPERATOR_SECURITY, "--entrypoint", "python", images.operator, "-c", imports
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["imported"]


# The distributions an image has installed, their Requires-Dist lines, its marker environment,
# and which commands of the operator's wheel it has.
INSTALLED = """
import importlib.metadata, json, os, platform, shutil, sys
print(json.dumps({
    "requires": {d.metadata["Name"]: d.requires or [] for d in importlib.metadata.distributions()},
    "environment": {
        "implementation_name": sys.implementation.name,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_system": platform.system(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
    "commands": sorted(c for c in ("agentflow", "kubectl-agentflow") if shutil.which(c)),
}))
"""


@pytest.mark.parametrize("which", ["operator", "runner"])
def test_the_image_installs_the_operator_wheel_and_only_what_its_program_needs(
    images: Images, which: str
) -> None:
    """The operator image: the operator's runtime dependencies (no dev cluster, no
    cryptography); the runner image: the agent-runner dependency group alone (no kopf,
    kubernetes, typer or rich), and no CLI commands, which could not run there."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    roots = {
        "operator": pyproject["project"]["dependencies"],
        "runner": pyproject["dependency-groups"]["agent-runner"],
    }[which]
    result = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", getattr(images, which),
        "-c", INSTALLED,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    found = json.loads(result.stdout)
    requires = {canonicalize_name(name): lines for name, lines in found["requires"].items()}
    expected = {"agentflow-operator"} | requirement_closure(
        roots, lambda name: requires.get(name, []), found["environment"]
    )
    assert set(requires) == expected
    assert not {"agentflow-devcluster", "cryptography"} & set(requires)
    if which == "runner":
        assert not {"kopf", "kubernetes", "typer", "rich", "aiohttp"} & set(requires)
        assert found["commands"] == []
    else:
        assert found["commands"] == ["agentflow", "kubectl-agentflow"]
