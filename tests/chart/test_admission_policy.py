"""The chart's optional ValidatingAdmissionPolicies (``admissionPolicy.enabled``): rendered only
when asked for, valid, bound to the operator's ServiceAccount alone, and speaking of the same
labels, names and step ServiceAccount as the operator's code and the Deployment's arguments.
What they admit and refuse is shown on a real API server in
tests/integration/test_admission_policy.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agentflow.api.models import WORKSPACE_PATH, AgentTemplate, StepResult, WorkspaceClaimTemplate
from agentflow.children import (
    LABEL_WORKSPACE,
    WorkflowRef,
    build_step_job,
    cache_configmap,
    output_configmap,
    workspace_claim,
)
from agentflow.engine.names import (
    WORKSPACE_NAME_INFIX,
    WORKSPACE_NAME_PREFIX_LENGTH,
    workspace_claim_name,
)
from agentflow.engine.types import CreateJob, WriteCache
from tests.chart.chart_tools import documents, find, kubeconform, one, render
from tests.chart.test_chart import container, parse_operator_args, rendered

POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
ADMISSION_TEMPLATE = (
    Path(__file__).resolve().parents[2] / "charts/agentflow/templates/_admission.tpl"
)
ENABLED = ("admissionPolicy.enabled=true",)
WF = WorkflowRef("wf", "team-a", "0d6e5f4c-0000-4000-8000-000000000000")


def expressions(policy: dict[str, Any]) -> str:
    """Every CEL expression and message of a policy, one per line."""
    spec = policy["spec"]
    parts = [c["expression"] for c in spec.get("matchConditions", [])]
    parts += [v["expression"] for v in spec.get("variables", [])]
    for v in spec["validations"]:
        parts += [v["expression"], v.get("message", ""), v.get("messageExpression", "")]
    return "\n".join(parts)


def the_operators_objects() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A step Job, a cache entry and an output ConfigMap, as the operator's code builds them."""
    action = CreateJob(
        job_name="wf-build-1-1-1-0123456789abcdef",
        step="build",
        run=1,
        iteration=1,
        attempt=1,
        agent=AgentTemplate(name="coder"),
        fallback=False,
        prompt="p",
        cache_key=None,
        timeout_seconds=None,
    )
    job = build_step_job(WF, action)
    write = WriteCache(key="k", step="build", result=StepResult(summary="ok"), ttl_seconds=60)
    cache = cache_configmap(WF.namespace, write, datetime.now(UTC))
    output = output_configmap(WF, action.job_name, "build", "report")
    return job, cache, output


def test_no_admission_policy_by_default() -> None:
    docs = rendered("default")
    for kind in POLICY_KINDS:
        assert not find(docs, kind)


@pytest.mark.parametrize("config", ["all-on", "all-on-cluster"])
def test_the_policies_and_their_bindings_deny_and_fail_closed(config: str) -> None:
    docs = rendered(config)
    policies = find(docs, "ValidatingAdmissionPolicy")
    assert {p["metadata"]["name"] for p in policies} == {
        "agentflow-step-jobs",
        "agentflow-configmaps",
        "agentflow-workspace-claims",
    }
    for policy in policies:
        assert policy["spec"]["failurePolicy"] == "Fail"
        binding = one(docs, "ValidatingAdmissionPolicyBinding", policy["metadata"]["name"])
        assert binding["spec"] == {
            "policyName": policy["metadata"]["name"],
            "validationActions": ["Deny"],
        }
        assert all(v["reason"] == "Forbidden" for v in policy["spec"]["validations"])
        assert all(
            v.get("message") or v.get("messageExpression") for v in policy["spec"]["validations"]
        )
    jobs = one(docs, "ValidatingAdmissionPolicy", "agentflow-step-jobs")
    assert jobs["spec"]["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["batch"],
            "apiVersions": ["v1"],
            "resources": ["jobs"],
            "operations": ["CREATE", "DELETE"],
        }
    ]
    configmaps = one(docs, "ValidatingAdmissionPolicy", "agentflow-configmaps")
    assert configmaps["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == [
        "CREATE",
        "UPDATE",
        "DELETE",
    ]
    claims = one(docs, "ValidatingAdmissionPolicy", "agentflow-workspace-claims")
    assert claims["spec"]["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["persistentvolumeclaims"],
            "operations": ["CREATE"],
        }
    ]


def test_enabled_on_the_default_values_passes_kubeconform_strict() -> None:
    manifests = render(sets=ENABLED)
    result = kubeconform(manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(documents(manifests))
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout, result.stdout
    assert len([d for d in documents(manifests) if d["kind"] in POLICY_KINDS]) == 6


@pytest.mark.parametrize(
    ("sets", "username"),
    [
        (ENABLED, "system:serviceaccount:agentflow-system:agentflow"),
        (
            (*ENABLED, "serviceAccount.name=flow-operator"),
            "system:serviceaccount:agentflow-system:flow-operator",
        ),
        (
            (*ENABLED, "serviceAccount.create=false"),
            "system:serviceaccount:agentflow-system:default",
        ),
    ],
)
def test_the_policies_match_only_the_operators_service_account(
    sets: tuple[str, ...], username: str
) -> None:
    docs = documents(render(sets=sets))
    account = one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    assert username.endswith(f":{account}")
    for policy in find(docs, "ValidatingAdmissionPolicy"):
        assert policy["spec"]["matchConditions"] == [
            {
                "name": "operator-service-account",
                "expression": f'request.userInfo.username == "{username}"',
            }
        ]


@pytest.mark.parametrize(
    ("config", "expected"), [("all-on", "agentflow-step"), ("all-on-cluster", "")]
)
def test_the_step_service_account_is_the_one_the_operator_is_told(
    config: str, expected: str
) -> None:
    told = parse_operator_args(container(config)["args"])["step_service_account"] or ""
    assert told == expected
    policy = one(rendered(config), "ValidatingAdmissionPolicy", "agentflow-step-jobs")
    required = re.findall(
        r"serviceAccount(?:Name)?\.orValue\(''\) == \"([^\"]*)\"", expressions(policy)
    )
    assert required == [told, told]


def test_the_policies_use_the_operators_label_names_and_api_version() -> None:
    """The chart's copies of the code's names (agentflow.operatorNames) have not drifted: the
    policies mention exactly the labels and owner API version of what the operator builds, the
    Job labels they require are the step Job's, and the ConfigMap names they accept are the
    ones the code gives."""
    docs = rendered("all-on")
    job, cache, output = the_operators_objects()
    jobs = expressions(one(docs, "ValidatingAdmissionPolicy", "agentflow-step-jobs"))
    configmaps = expressions(one(docs, "ValidatingAdmissionPolicy", "agentflow-configmaps"))
    names = re.compile(r"agentflow\.dev/[a-z0-9-]+")

    owner = job["metadata"]["ownerReferences"][0]["apiVersion"]
    assert owner == output["metadata"]["ownerReferences"][0]["apiVersion"]
    assert set(names.findall(jobs)) == set(job["metadata"]["labels"]) | {owner}
    assert set(names.findall(configmaps)) == set(cache["metadata"]["labels"]) | set(
        output["metadata"]["labels"]
    ) | {owner}
    listed = re.search(r"\[((?:\"agentflow\.dev/[a-z-]+\",?)+)\]\.filter", jobs)
    assert listed, jobs
    assert re.findall(r"agentflow\.dev/[a-z-]+", listed[1]) == list(job["metadata"]["labels"])

    cache_pattern = re.search(r"name\.matches\('([^']+)'\)", configmaps)
    assert cache_pattern and re.fullmatch(cache_pattern[1].strip("^$"), cache["metadata"]["name"])
    suffix = re.search(r"name\.endsWith\('([^']+)'\)", configmaps)
    assert suffix and output["metadata"]["name"] == job["metadata"]["name"] + suffix[1]


def the_operators_workspace() -> tuple[dict[str, Any], dict[str, Any]]:
    """A step Job that mounts a workspace claim and the claim, as the operator builds them."""
    job, _, _ = the_operators_objects()
    claim_name = workspace_claim_name(WF.name, uid=WF.uid)
    action = CreateJob(
        job_name=job["metadata"]["name"],
        step="build",
        run=1,
        iteration=1,
        attempt=1,
        agent=AgentTemplate(name="coder"),
        fallback=False,
        prompt="p",
        cache_key=None,
        timeout_seconds=None,
        workspace_claim=claim_name,
    )
    claim = workspace_claim(WF, claim_name, WorkspaceClaimTemplate(storage="1Gi"))
    return build_step_job(WF, action), claim


def test_the_workspace_rules_use_the_operators_names() -> None:
    """The chart's copies of the workspace's names (volume, path, claim name shape, label)
    are the code's: the claim the operator makes and the Job that mounts it have them."""
    job, claim = the_operators_workspace()
    pod = job["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    tpl = ADMISSION_TEMPLATE.read_text()
    assert f'"workspaceVolume" "{volume["name"]}"' in tpl
    assert mount["mountPath"] == WORKSPACE_PATH
    assert f'"workspacePath" "{WORKSPACE_PATH}"' in tpl
    assert f'"workspace" "{LABEL_WORKSPACE}"' in tpl
    assert f'"workspaceInfix" "{WORKSPACE_NAME_INFIX}"' in tpl
    assert f'"workspacePrefixLength" {WORKSPACE_NAME_PREFIX_LENGTH})' in tpl
    assert claim["metadata"]["labels"][LABEL_WORKSPACE] == WF.name
    policy = expressions(
        one(rendered("all-on"), "ValidatingAdmissionPolicy", "agentflow-workspace-claims")
    )
    assert set(re.findall(r"agentflow\.dev/[a-z0-9-]+", policy)) == set(
        claim["metadata"]["labels"]
    ) | {claim["metadata"]["ownerReferences"][0]["apiVersion"]}
