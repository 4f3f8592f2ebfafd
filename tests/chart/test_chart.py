"""The Helm chart: lint, render, offline schema validation (kubeconform -strict) and the
properties the operator relies on (arguments its CLI accepts, least-privilege RBAC, guarded
prometheus-operator objects, one source for the alert rules)."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from agentflow.api.models import Workflow
from agentflow.cli import app
from agentflow.config import load_config
from tests.chart.chart_tools import (
    CHART,
    HERE,
    KUBE_VERSION,
    MONITORING_API,
    documents,
    find,
    kubeconform,
    one,
    render,
    render_result,
    run,
    tool,
)

ALL_ON = HERE / "values-all-on.yaml"
CLUSTER_ALL_ON = ("watch.mode=cluster", "rbac.scope=cluster")
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())

# name -> (values files, --set, --api-versions)
CONFIGS: dict[str, tuple[tuple[Path, ...], tuple[str, ...], tuple[str, ...]]] = {
    "default": ((), (), ()),
    "all-on": ((ALL_ON,), (), (MONITORING_API,)),
    "all-on-cluster": ((ALL_ON,), CLUSTER_ALL_ON, (MONITORING_API,)),
}


def rendered(config: str) -> list[dict[str, Any]]:
    files, sets, apis = CONFIGS[config]
    return documents(render(files, sets, apis))


def deployment(config: str) -> dict[str, Any]:
    return one(rendered(config), "Deployment")


def container(config: str) -> dict[str, Any]:
    containers = deployment(config)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


# --------------------------------------------------------------------------------------------
# Lint and schemas
# --------------------------------------------------------------------------------------------


def test_chart_metadata() -> None:
    assert CHART_META["apiVersion"] == "v2"
    assert CHART_META["name"] == "agentflow"
    assert CHART_META["version"] == "0.1.0"
    assert CHART_META["appVersion"] == "0.1.0"
    assert CHART_META["kubeVersion"] == ">=1.30.0-0"


@pytest.mark.parametrize("config", CONFIGS)
def test_helm_lint(config: str) -> None:
    files, sets, _ = CONFIGS[config]
    args = [tool("helm"), "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART)]
    for f in files:
        args += ["--values", str(f)]
    for s in sets:
        args += ["--set", s]
    result = run(args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("config", CONFIGS)
def test_every_rendered_manifest_passes_kubeconform_strict(config: str) -> None:
    files, sets, apis = CONFIGS[config]
    result = kubeconform(render(files, sets, apis))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    count = len(rendered(config))
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in summary, summary


def test_kubeconform_rejects_an_unknown_field() -> None:
    """The offline schemas are strict, so the check above can fail."""
    manifests = render(*CONFIGS["all-on"])
    for bad in (
        manifests.replace(
            "strategy:\n    type: Recreate", "strategy:\n    type: Recreate\n    x: 1"
        ),
        manifests.replace("honorLabels: true", "honorLabels: true\n      bogus: 1"),
        manifests.replace(
            "- alert: AgentflowOperatorDown", "- alert: AgentflowOperatorDown\n        bogus: 1"
        ),
    ):
        assert bad != manifests
        result = kubeconform(bad)
        assert result.returncode != 0, result.stdout


def test_the_generated_crds_pass_kubeconform_strict() -> None:
    crds = sorted((CHART / "crds").glob("*.yaml"))
    assert [p.name for p in crds] == [
        "agentflow.dev_agentfallbackpolicies.yaml",
        "agentflow.dev_workflows.yaml",
    ]
    text = "\n---\n".join(p.read_text() for p in crds)
    result = kubeconform(text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid: 2, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout


def test_kube_version_below_1_30_is_refused() -> None:
    result = run([tool("helm"), "template", "x", str(CHART), "--kube-version", "1.29.9"])
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("unknownTopLevel=1",), "additional properties 'unknownTopLevel' not allowed"),
        (("image.registry=x",), "additional properties 'registry' not allowed"),
        (("metrics.serviceMonitor.bogus=true",), "additional properties 'bogus' not allowed"),
        (("metrics.prometheusRule.alerts.NoSuchAlert.for=5m",), "'NoSuchAlert' not allowed"),
        (("watch.mode=everything",), "/watch/mode"),
        (("logFormat=xml",), "logFormat"),
        (("maxJobsPerNamespace=0",), "maxJobsPerNamespace"),
        (("watch.mode=namespaced", "rbac.scope=namespaced"), "list the namespaces to watch"),
        (("rbac.scope=namespaced",), "set watch.mode namespaced too"),
    ],
)
def test_invalid_values_are_rejected(sets: tuple[str, ...], message: str) -> None:
    result = render_result(sets=sets)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_the_schema_closes_every_object_it_defines() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties") is not False:
                open_objects.append(path)
            for name, child in node["properties"].items():
                walk(child, f"{path}.{name}")

    walk(schema, "values")
    assert open_objects == []
    # Every default value is described by the schema (it would fail rendering otherwise, but
    # this names the key).
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


# --------------------------------------------------------------------------------------------
# The operator Deployment
# --------------------------------------------------------------------------------------------


def test_deployment_defaults() -> None:
    d = deployment("default")
    spec = d["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert (
        pod["serviceAccountName"] == one(rendered("default"), "ServiceAccount")["metadata"]["name"]
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container("default")
    assert c["image"] == f"agentflow/operator:{CHART_META['appVersion']}"
    assert c["command"] == ["agentflow", "operator"]
    assert c["args"] == ["--all-namespaces", "--log-format", "json", "--metrics-port", "8080"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    port = one_port(c)
    assert port == {"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    # A read-only root filesystem still needs a writable /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def one_port(c: dict[str, Any]) -> dict[str, Any]:
    assert len(c["ports"]) == 1
    port: dict[str, Any] = c["ports"][0]
    return port


def test_deployment_args_with_every_option() -> None:
    assert container("all-on")["args"] == [
        "--namespace",
        "team-a",
        "--namespace",
        "team-b",
        "--log-format",
        "text",
        "--metrics-port",
        "8080",
        "--allowed-images",
        "agentflow/agent-runner:0.1.0,registry.example.com/agents/coder:1.4",
        "--max-jobs-per-namespace",
        "20",
        "--metrics-auth",
        "--step-service-account",
        "agentflow-step",
    ]
    assert container("all-on-cluster")["args"][:1] == ["--all-namespaces"]
    assert "--step-service-account" not in container("all-on-cluster")["args"]


def parse_operator_args(args: list[str]) -> dict[str, Any]:
    """Parse arguments exactly as the `agentflow operator` command would, without running it."""
    group: Any = typer.main.get_command(app)  # typer's own click: duck-typed
    with group.make_context("agentflow", ["operator", *args]) as ctx:
        command = group.get_command(ctx, "operator")
        assert command is not None
        with command.make_context("operator", list(args), parent=ctx) as sub:
            return dict(sub.params)


@pytest.mark.parametrize("config", CONFIGS)
def test_the_operator_cli_accepts_the_chart_arguments(config: str) -> None:
    c = container(config)
    assert c["command"] == ["agentflow", "operator"]
    params = parse_operator_args(c["args"])
    assert params["metrics_port"] == 8080
    if config == "all-on":
        assert params["namespace"] == ["team-a", "team-b"]
        assert params["metrics_auth"] is True
        assert params["max_jobs_per_namespace"] == 20
        assert params["step_service_account"] == "agentflow-step"
        assert params["log_format"] == "text"
    else:
        assert params["all_namespaces"] is True


@pytest.mark.parametrize(
    ("allowed", "flag"),
    [
        (None, None),  # null: the switch is off, any Secret may be referenced
        ([], ""),  # an empty list: none may
        (["llm-*", "github-token"], "llm-*,github-token"),
    ],
)
def test_allowed_secrets_reach_the_operator_as_its_flag(
    allowed: list[str] | None, flag: str | None, tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"agents": {"allowedSecrets": allowed}}))
    deployment = one(documents(render([values])), "Deployment")
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    assert parse_operator_args(c["args"])["allowed_secrets"] == flag


@pytest.mark.parametrize("value", ["Upper", "a/b", "a_b"])
def test_the_schema_refuses_a_secret_pattern_that_is_no_secret_name(value: str) -> None:
    result = render_result(sets=(f"agents.allowedSecrets[0]={value}",))
    assert result.returncode != 0
    assert "allowedSecrets" in result.stderr, result.stderr


@pytest.mark.parametrize("config", CONFIGS)
def test_the_lease_is_in_the_release_namespace_in_every_watch_mode(config: str) -> None:
    """Never in a watched namespace, where a tenant could write it (namespaced mode used to
    put it into the first watched one)."""
    c = container(config)
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert "AGENTFLOW_LEASE_NAMESPACE" not in env
    lease_name = env["AGENTFLOW_LEASE_NAME"]["value"]
    config_of_pod = load_config(
        {"POD_NAMESPACE": "agentflow-system", "AGENTFLOW_LEASE_NAME": lease_name}
    )
    assert (config_of_pod.lease_namespace, config_of_pod.lease_name) == (
        "agentflow-system",
        lease_name,
    )
    # The operator may read, renew and watch its Lease exactly there, and by that name.
    docs = rendered(config)
    roles = [
        r for r in find(docs, "Role") if any("leases" in rule["resources"] for rule in r["rules"])
    ]
    assert [r["metadata"]["namespace"] for r in roles] == ["agentflow-system"]
    [role] = roles
    by_verbs = {tuple(rule["verbs"]): rule.get("resourceNames") for rule in role["rules"]}
    assert by_verbs == {("get", "update", "watch"): [lease_name], ("create",): None}
    # No other role grants anything on Leases (the operator used to read all of them).
    for other in [*find(docs, "Role"), *find(docs, "ClusterRole")]:
        if other is not role:
            assert not any("leases" in rule.get("resources", []) for rule in other["rules"])


def test_all_on_passes_pod_settings_through() -> None:
    pod = deployment("all-on")["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "platform"
    assert pod["metadata"]["annotations"] == {"example.com/scrape": "true"}
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in spec["affinity"]
    env = {e["name"]: e.get("value") for e in container("all-on")["env"]}
    assert env["AGENTFLOW_API_QPS"] == "100"


# --------------------------------------------------------------------------------------------
# RBAC
# --------------------------------------------------------------------------------------------

OPERATOR_RULES = {
    # Exactly what tests/integration/test_chart_rbac.py saw the operator use on a real
    # API server (audit log), under this chart's ServiceAccount.
    ("agentflow.dev", "workflows"): {"get", "list", "watch", "patch", "delete"},
    ("agentflow.dev", "workflows/status"): {"patch"},
    ("agentflow.dev", "agentfallbackpolicies"): {"list", "watch"},
    ("agentflow.dev", "agentfallbackpolicies/status"): {"patch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "configmaps"): {"list", "watch", "create", "patch", "delete"},
    ("", "persistentvolumeclaims"): {"get", "create"},
    ("", "events"): {"create"},
}


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules") or []:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize("config", CONFIGS)
def test_no_role_grants_secrets_or_wildcards(config: str) -> None:
    for role in find(rendered(config), "Role") + find(rendered(config), "ClusterRole"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "nonResourceURLs"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert "secrets" not in rule.get("resources", []), role["metadata"]["name"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_cluster_scope_rbac() -> None:
    docs = rendered("default")
    role = one(docs, "ClusterRole", "agentflow")
    assert grants(role) == OPERATOR_RULES
    binding = one(docs, "ClusterRoleBinding", "agentflow")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "agentflow",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "agentflow", "namespace": "agentflow-system"}
    ]
    lease = one(docs, "Role", "agentflow-leader-election")
    assert grants(lease) == {
        ("coordination.k8s.io", "leases"): {"get", "create", "update", "watch"}
    }
    # Without metrics auth, no token or access reviews.
    names = {r["metadata"]["name"] for r in find(docs, "ClusterRole")}
    assert names == {"agentflow"}


def test_namespaced_scope_rbac() -> None:
    docs = rendered("all-on")
    roles = [r for r in find(docs, "Role", "agentflow")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert grants(role) == OPERATOR_RULES
    bindings = find(docs, "RoleBinding", "agentflow")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "agentflow", "namespace": "agentflow-system"}
        ]
    # Cluster-wide: only what --metrics-auth needs, and the reader role for scrapers.
    cluster_roles = {r["metadata"]["name"]: r for r in find(docs, "ClusterRole")}
    assert set(cluster_roles) == {"agentflow-metrics-auth", "agentflow-metrics-reader"}


def test_namespaced_watch_alone_keeps_the_cluster_role() -> None:
    """watch.mode namespaced bounds the operator's rights only with rbac.scope namespaced too."""
    watched = ("watch.mode=namespaced", "watch.namespaces={team-a}")
    alone = documents(render(sets=watched))
    assert one(alone, "ClusterRole", "agentflow")
    assert not find(alone, "Role", "agentflow")
    both = documents(render(sets=(*watched, "rbac.scope=namespaced")))
    assert not find(both, "ClusterRole")
    assert one(both, "Role", "agentflow")["metadata"]["namespace"] == "team-a"


@pytest.mark.parametrize("config", ["all-on", "all-on-cluster"])
def test_metrics_auth_rbac(config: str) -> None:
    docs = rendered(config)
    auth = one(docs, "ClusterRole", "agentflow-metrics-auth")
    assert grants(auth) == {
        ("authentication.k8s.io", "tokenreviews"): {"create"},
        ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
    }
    reader = one(docs, "ClusterRole", "agentflow-metrics-reader")
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    scrapers = one(docs, "ClusterRoleBinding", "agentflow-metrics-reader")
    assert scrapers["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}
    ]
    operator_binding = one(docs, "ClusterRoleBinding", "agentflow-metrics-auth")
    assert operator_binding["subjects"][0]["name"] == "agentflow"


@pytest.mark.parametrize("config", CONFIGS)
def test_every_binding_refers_to_a_rendered_role_and_the_operator_account(config: str) -> None:
    docs = rendered(config)
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in find(docs, "ServiceAccount")
    }
    operator_sa = deployment(config)["spec"]["template"]["spec"]["serviceAccountName"]
    for b in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding"):
        ref = b["roleRef"]
        if ref["kind"] == "Role":
            assert find(docs, "Role", ref["name"])
            target = [r for r in find(docs, "Role", ref["name"])]
            assert b["metadata"]["namespace"] in {r["metadata"]["namespace"] for r in target}
        else:
            assert find(docs, "ClusterRole", ref["name"])
        for s in b["subjects"]:
            if b["metadata"]["name"] != "agentflow-metrics-reader":
                assert s["name"] == operator_sa
                assert ("agentflow-system", s["name"]) in accounts


def test_every_operator_rule_names_the_code_that_needs_it() -> None:
    lines = (CHART / "templates" / "_rbac.tpl").read_text().splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("- apiGroups:")]
    assert len(rules) == len(OPERATOR_RULES)
    for i in rules:
        assert lines[i - 1].startswith("#"), f"rule at line {i + 1} has no comment"
    comments = "\n".join(line for line in lines if line.startswith("#"))
    for code in ("kube.Kube.create_job", "kube.Kube.patch_workflow_status", "read_job_log"):
        assert code in comments


def test_step_service_account() -> None:
    docs = rendered("all-on")
    steps = [sa for sa in find(docs, "ServiceAccount", "agentflow-step")]
    assert sorted(sa["metadata"]["namespace"] for sa in steps) == ["team-a", "team-b"]
    for sa in steps:
        assert sa["automountServiceAccountToken"] is False
    # No rights: nothing binds it.
    for b in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding"):
        assert all(s["name"] != "agentflow-step" for s in b["subjects"])
    # In cluster mode the chart cannot create it everywhere, so it is neither created nor used.
    assert not find(rendered("all-on-cluster"), "ServiceAccount", "agentflow-step")


# --------------------------------------------------------------------------------------------
# Metrics Service, ServiceMonitor, PrometheusRule, dashboard, NetworkPolicy
# --------------------------------------------------------------------------------------------


def test_metrics_service_selects_the_operator_pod() -> None:
    docs = rendered("default")
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}
    ]
    pod_labels = deployment("default")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_prometheus_operator_objects_need_the_api() -> None:
    files, sets, _ = CONFIGS["all-on"]
    without = documents(render(files, sets))
    assert not find(without, "ServiceMonitor")
    assert not find(without, "PrometheusRule")
    with_api = rendered("all-on")
    monitor = one(with_api, "ServiceMonitor")
    service = one(with_api, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True
    assert endpoint["interval"] == "15s"
    assert "bearerTokenFile" in endpoint  # metrics.auth is on in all-on
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert one(with_api, "PrometheusRule")["metadata"]["labels"]["release"] == "prometheus"
    # Off by default even when the API exists.
    defaults = documents(render(api_versions=(MONITORING_API,)))
    assert not find(defaults, "ServiceMonitor")
    assert not find(defaults, "PrometheusRule")


def test_prometheus_rule_renders_files_alerts_yaml_unchanged_by_default() -> None:
    source = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    docs = documents(
        render(sets=("metrics.prometheusRule.enabled=true",), api_versions=(MONITORING_API,))
    )
    assert one(docs, "PrometheusRule")["spec"] == source


def test_prometheus_rule_values_adjust_the_rules() -> None:
    rule = one(rendered("all-on"), "PrometheusRule")
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "AgentflowDegradedRatioHigh" not in rules
    assert rules["AgentflowStepsStuck"]["for"] == "30m"
    assert rules["AgentflowStepsStuck"]["labels"] == {"severity": "info", "team": "platform"}
    assert rules["AgentflowOperatorDown"]["labels"] == {"severity": "critical", "team": "platform"}
    expr = rules["AgentflowOperatorDown"]["expr"]
    assert 'job=~"agentflow-metrics"' in expr
    assert ".*agentflow.*" not in expr


def test_grafana_dashboard_configmap() -> None:
    cm = one(rendered("all-on"), "ConfigMap")
    assert cm["metadata"]["name"] == "agentflow-dashboard"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "agentflow"}
    dashboard = json.loads(cm["data"]["agentflow.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())
    assert not find(rendered("default"), "ConfigMap")


def test_network_policy() -> None:
    docs = rendered("all-on")
    policy = one(docs, "NetworkPolicy")["spec"]
    pod_labels = deployment("all-on")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    api, dns = policy["egress"]
    assert {p["port"] for p in api["ports"]} == {443, 6443}
    assert [t["ipBlock"]["cidr"] for t in api["to"]] == ["10.0.0.1/32", "172.18.0.2/32"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert not find(rendered("default"), "NetworkPolicy")


# --------------------------------------------------------------------------------------------
# NOTES.txt
# --------------------------------------------------------------------------------------------


def render_notes(tmp_path: Path, sets: tuple[str, ...] = ()) -> str:
    """NOTES.txt as `helm install` would print it (`helm template` skips it, and `helm install
    --dry-run` cannot be told the Kubernetes version), via a throwaway copy of the chart."""
    copy = tmp_path / "agentflow"
    shutil.copytree(CHART, copy)
    (copy / "files" / "notes.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (copy / "templates" / "notes-check.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ tpl (.Files.Get "files/notes.txt") . | toJson }}\n'
    )
    args = [tool("helm"), "template", "agentflow", str(copy), "--namespace", "agentflow-system"]
    args += ["--kube-version", KUBE_VERSION, "--show-only", "templates/notes-check.yaml"]
    for s in sets:
        args += ["--set", s]
    result = run(args)
    assert result.returncode == 0, result.stderr
    notes: str = yaml.safe_load(result.stdout)["data"]["notes"]
    return notes


def test_notes_show_a_valid_example_how_to_watch_it_and_the_metrics(tmp_path: Path) -> None:
    notes = render_notes(tmp_path)
    example = re.search(r"<<'YAML'\n(.*?)\n\s*YAML\n", notes, re.S)
    assert example, notes
    workflow = Workflow.model_validate(yaml.safe_load(textwrap.dedent(example[1])))
    assert workflow.metadata.name == "hello"
    assert "kubectl get workflows -n default -w" in notes
    assert "kubectl wait workflow/hello -n default --for=condition=Ready" in notes
    assert "http://agentflow-metrics.agentflow-system.svc:8080/metrics" in notes


def test_notes_in_namespaced_mode_use_a_watched_namespace(tmp_path: Path) -> None:
    notes = render_notes(
        tmp_path, ("watch.mode=namespaced", "rbac.scope=namespaced", "watch.namespaces={team-x}")
    )
    assert "It watches Workflows in: team-x." in notes
    assert "kubectl apply -n team-x" in notes


def test_prices_and_concurrency_limits_reach_the_operator_as_its_configuration(
    tmp_path: Path,
) -> None:
    from decimal import Decimal

    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "prices": {
                    "currency": "USD",
                    "models": [
                        {
                            "provider": "anthropic",
                            "model": "claude-sonnet-4-5",
                            "inputPerMillion": "3",
                            "outputPerMillion": 15.5,
                        }
                    ],
                },
                "concurrencyLimits": [
                    {"name": "anthropic", "provider": "anthropic", "max": 4},
                    {"name": "team-key", "secret": "openai-*", "max": 2},
                ],
            }
        )
    )
    [c] = one(documents(render([values])), "Deployment")["spec"]["template"]["spec"]["containers"]
    params = parse_operator_args(c["args"])
    config = load_config(
        {}, {"prices": params["prices"], "concurrency_limits": params["concurrency_limits"]}
    )
    price = config.price_table.price("anthropic", "claude-sonnet-4-5")
    assert price is not None
    assert (price.input_per_million, price.output_per_million) == (Decimal(3), Decimal("15.5"))
    assert [(r.name, r.max, r.provider, r.secret) for r in config.concurrency_rules] == [
        ("anthropic", 4, "anthropic", None),
        ("team-key", 2, None, "openai-*"),
    ]
    # Nothing set: neither flag.
    [plain] = deployment("default")["spec"]["template"]["spec"]["containers"]
    assert "--prices" not in plain["args"] and "--concurrency-limits" not in plain["args"]


@pytest.mark.parametrize(
    "sets",
    [
        ("concurrencyLimits[0].name=Bad",),
        ("concurrencyLimits[0].name=a", "concurrencyLimits[0].max=0"),
        ("prices.models[0].model=m",),
    ],
)
def test_the_schema_refuses_bad_limits_and_prices(sets: tuple[str, ...]) -> None:
    result = render_result(sets=sets)
    assert result.returncode != 0
    assert "concurrencyLimits" in result.stderr or "prices" in result.stderr, result.stderr
