from __future__ import annotations

from agentflow.api.models import AgentTemplate, EnvVar, EnvVarSource, Provider, SecretKeySelector
from agentflow.children import JobSettings, WorkflowRef, build_step_job
from agentflow.engine.types import CreateJob

WF = WorkflowRef(name="wf", namespace="team-a", uid="uid-1")


def _action(**agent: object) -> CreateJob:
    return CreateJob(
        job_name="wf-step-1-1-1",
        step="step",
        run=1,
        iteration=1,
        attempt=1,
        agent=AgentTemplate(name="coder", **agent),  # type: ignore[arg-type]
        fallback=False,
        prompt="$(rm -rf /); `id` {{ x }} ${HOME}",
        cache_key="sha256:abc",
        timeout_seconds=120,
    )


def test_job_is_owned_labelled_and_never_retried_by_kubernetes() -> None:
    job = build_step_job(WF, _action())
    meta = job["metadata"]
    assert meta["name"] == "wf-step-1-1-1"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "agentflow.dev/v1alpha1",
            "kind": "Workflow",
            "name": "wf",
            "uid": "uid-1",
            "controller": True,
        }
    ]
    assert meta["labels"]["agentflow.dev/workflow"] == "wf"
    assert meta["labels"]["agentflow.dev/attempt"] == "1"
    assert meta["labels"]["agentflow.dev/agent"] == "coder"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 120
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert job["spec"]["template"]["metadata"]["labels"] == meta["labels"]


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = build_step_job(WF, _action())["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": "scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    assert not any("hostPath" in v for v in pod["volumes"])


def test_prompt_is_data_in_the_environment_never_a_command_line() -> None:
    container = build_step_job(WF, _action())["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container and "args" not in container
    env = {e["name"]: e.get("value") for e in container["env"]}
    # Every `$` doubled: the kubelet's $(VAR) expansion turns it back into the prompt as written.
    assert env["AGENTFLOW_PROMPT"] == "$$(rm -rf /); `id` {{ x }} $${HOME}"
    assert container["image"] == "agentflow/agent-runner:0.1.0"


def test_agent_env_cannot_shadow_operator_values_and_secrets_stay_references() -> None:
    action = _action(
        provider=Provider.ANTHROPIC,
        env=[
            EnvVar(name="AGENTFLOW_PROMPT", value="hijacked"),
            EnvVar(
                name="ANTHROPIC_API_KEY",
                value_from=EnvVarSource(secret_key_ref=SecretKeySelector(name="keys", key="a")),
            ),
        ],
    )
    env = build_step_job(WF, action)["spec"]["template"]["spec"]["containers"][0]["env"]
    prompts = [e for e in env if e["name"] == "AGENTFLOW_PROMPT"]
    assert prompts == [{"name": "AGENTFLOW_PROMPT", "value": "$$(rm -rf /); `id` {{ x }} $${HOME}"}]
    assert {
        "name": "ANTHROPIC_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "keys", "key": "a"}},
    } in env
    assert {"name": "AGENTFLOW_PROVIDER", "value": "anthropic"} in env


def test_settings_set_service_account_and_ttl() -> None:
    job = build_step_job(
        WF,
        _action(),
        JobSettings(ttl_seconds_after_finished=60, service_account_name="agentflow-step"),
    )
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "agentflow-step"


def test_a_limited_attempt_carries_its_limit_label_and_its_budget_bound() -> None:
    from dataclasses import replace

    budget_env = EnvVar(name="AGENTFLOW_BUDGET_MAX_TOKENS", value="999999")
    action = replace(
        _action(provider=Provider.ANTHROPIC, env=[budget_env]),
        max_tokens=1200,
        concurrency_limit="anthropic",
    )
    job = build_step_job(WF, action)
    labels = job["metadata"]["labels"]
    assert labels["agentflow.dev/limit"] == "anthropic"
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    # The operator's bound, and the agent's own entry of that name does not shadow it.
    assert [e for e in env if e["name"] == "AGENTFLOW_BUDGET_MAX_TOKENS"] == [
        {"name": "AGENTFLOW_BUDGET_MAX_TOKENS", "value": "1200"}
    ]


def test_an_unlimited_attempt_has_the_six_step_labels_and_no_budget_bound() -> None:
    job = build_step_job(WF, _action())
    assert "agentflow.dev/limit" not in job["metadata"]["labels"]
    assert len(job["metadata"]["labels"]) == 6
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not [e for e in env if e["name"] == "AGENTFLOW_BUDGET_MAX_TOKENS"]
