"""Helpers for tests that apply Workflows and read what the operator did."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import wait_for

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
REPO = Path(__file__).resolve().parents[2]
TERMINAL = ("Succeeded", "Failed")


def apply(kubectl: Kubectl, namespace: str, docs: str | Path | list[dict[str, Any]]) -> None:
    if isinstance(docs, Path):
        text = docs.read_text()
    elif isinstance(docs, list):
        text = yaml.safe_dump_all(docs)
    else:
        text = docs
    result = kubectl("apply", "-n", namespace, "-f", "-", input=text)
    assert result.returncode == 0, result.stderr


def get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", "-n", namespace, kind, name, "-o", "json")
    if result.returncode != 0:
        return None
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def items(kubectl: Kubectl, namespace: str, kind: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", "-n", namespace, kind, "-o", "json"]
    if selector:
        args += ["-l", selector]
    result = kubectl(*args)
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return found


def wait_finished(
    kubectl: Kubectl, namespace: str, name: str, timeout: float = 120
) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        wf = get(kubectl, namespace, "workflows.agentflow.dev", name)
        if wf and (wf.get("status") or {}).get("phase") in TERMINAL:
            return wf
        return None

    return wait_for(finished, timeout, interval=0.3, what=f"workflow {namespace}/{name} to finish")


def step(wf: dict[str, Any], name: str) -> dict[str, Any]:
    for s in wf["status"]["steps"]:
        if s["name"] == name:
            found: dict[str, Any] = s
            return found
    raise AssertionError(f"no step {name} in status: {wf['status']}")


def condition(wf: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (wf.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            found: dict[str, Any] = c
            return found
    return None


def step_jobs(kubectl: Kubectl, namespace: str, workflow: str) -> list[dict[str, Any]]:
    return items(kubectl, namespace, "jobs", f"agentflow.dev/workflow={workflow}")


def job_env(job: dict[str, Any], name: str) -> str | None:
    for var in job["spec"]["template"]["spec"]["containers"][0].get("env", []):
        if var["name"] == name:
            value: str | None = var.get("value")
            return value
    return None


def events(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in items(kubectl, namespace, "events")
        if e.get("involvedObject", {}).get("name") == name
        and e.get("involvedObject", {}).get("kind") == "Workflow"
    ]


def script_agent(
    name: str,
    report: str | None = None,
    fail: str | None = None,
    sleep: float | None = None,
    output_bytes: int | None = None,
) -> dict[str, Any]:
    env: list[dict[str, str]] = []
    if report is not None:
        env.append({"name": "AGENTFLOW_SCRIPT_REPORT", "value": report})
    if fail is not None:
        env.append({"name": "AGENTFLOW_SCRIPT_FAIL", "value": fail})
    if sleep is not None:
        env.append({"name": "AGENTFLOW_SCRIPT_SLEEP_SECONDS", "value": str(sleep)})
    if output_bytes is not None:
        env.append({"name": "AGENTFLOW_SCRIPT_OUTPUT_BYTES", "value": str(output_bytes)})
    return {"name": name, "provider": "script", "env": env}


def workflow(
    name: str, steps: list[dict[str, Any]], agents: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": steps, "agents": agents, **spec},
    }


def policy(name: str, rules: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "AgentFallbackPolicy",
        "metadata": {"name": name},
        "spec": {"rules": rules, **spec},
    }
