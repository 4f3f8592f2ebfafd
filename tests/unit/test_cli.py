"""The ``agentflow`` CLI without a cluster: validate, graph, the views, watch's decisions, and
the one-line answer (exit code 3) when no API server is reachable."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from agentflow.api.models import (
    Artifact,
    Attempt,
    Condition,
    StepMetrics,
    StepPhase,
    StepResult,
    StepStatus,
    WorkflowPhase,
    WorkflowStatus,
)
from agentflow.cli import app
from agentflow.console import views
from agentflow.console.cache import CacheRow
from agentflow.console.cluster import ConsoleError
from agentflow.console.timefmt import duration
from agentflow.console.watch import watch

REPO = Path(__file__).resolve().parents[2]
BROKEN = Path("tests") / "fixtures" / "broken"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    # Messages name files as given on the command line: run from the repository root.
    monkeypatch.chdir(REPO)


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def write(tmp_path: Path, name: str, *docs: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def workflow_doc(name: str = "wf", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agents": [{"name": "worker", "provider": "script"}],
        "steps": [{"name": "only", "agent": "worker"}],
    }
    body.update(spec)
    return {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": body,
    }


# ---- validate ---------------------------------------------------------------------------


def test_every_example_is_valid() -> None:
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "workflows").glob("*.yaml"))
    assert files, "no examples in workflows/"
    result = run("validate", *files)
    assert result.exit_code == 0, result.output
    for path in files:
        for doc in yaml.safe_load_all((REPO / path).read_text()):
            line = f"OK {path}: {doc['kind']}/{doc['metadata']['name']}"
            assert line in result.output.splitlines()
    assert "resource(s) valid" in result.output


BROKEN_FILES = [
    ("cycle.yaml", "Workflow/cyclic: spec.steps: dependency cycle a -> b -> a"),
    ("unknown-depends-on.yaml", "Workflow/foo: spec.steps[1].dependsOn: unknown step 'x'"),
    ("duplicate-steps.yaml", "Workflow/twice: spec.steps: duplicate step name 'build'"),
    (
        "unknown-agent.yaml",
        "Workflow/ghostly: spec.steps[0].agent: unknown agent 'ghost' (declared: writer)",
    ),
    ("invalid-cel.yaml", "Workflow/bad-condition: spec.steps[1].when: invalid CEL: "),
    (
        "unknown-template.yaml",
        "Workflow/bad-prompt: spec.steps[0].prompt: unknown reference {{ steps.research.summary }}",
    ),
    ("policy-loop.yaml", "AgentFallbackPolicy/loop: spec.rules: fallback chain loops: a -> b -> a"),
    (
        "critical-skippable.yaml",
        "AgentFallbackPolicy/contradictory: spec.rules[0].skipIfUnavailable: agent 'validator' "
        "is critical and cannot be skipped",
    ),
    ("bad-yaml.yaml", "invalid YAML: expected ',' or ']', but got '<scalar>' (line 8, column 3)"),
    (
        "missing-policy.yaml",
        "Workflow/orphan: spec.fallbackPolicyRef.name: AgentFallbackPolicy 'nowhere' is not "
        "defined in the given files",
    ),
    (
        "string-number.yaml",
        "Workflow/stringly: spec.steps[0].timeoutSeconds: Input should be a valid integer",
    ),
    (
        "undeclared-fallback.yaml",
        "Workflow/no-backup: spec.agents: fallback agent 'backup' of agent 'primary' "
        "(AgentFallbackPolicy/backups) is not declared",
    ),
]


@pytest.mark.parametrize(("name", "message"), BROKEN_FILES, ids=[n for n, _ in BROKEN_FILES])
def test_broken_files_fail_with_the_expected_message(name: str, message: str) -> None:
    path = str(BROKEN / name)
    result = run("validate", path)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stdout.splitlines() if not line.startswith("OK ")]
    assert any(line.startswith(f"{path}: {message}") for line in errors), result.output
    assert "error(s)" in result.stderr


def test_every_broken_fixture_is_covered() -> None:
    on_disk = {p.name for p in (REPO / BROKEN).glob("*.yaml")}
    assert on_disk == {name for name, _ in BROKEN_FILES}


def test_schema_errors_name_the_field_in_camel_case(tmp_path: Path) -> None:
    doc = workflow_doc(
        "schema",
        steps=[
            {"name": "Not_A_Label", "agent": "worker"},
            {"name": "ok", "agent": "worker", "dependOn": ["x"], "timeoutSeconds": 0},
        ],
    )
    result = run("validate", write(tmp_path, "schema.yaml", doc))
    assert result.exit_code == 1
    out = result.stdout
    prefix = f"{tmp_path / 'schema.yaml'}: Workflow/schema: "
    assert f"{prefix}spec.steps[0].name: String should match pattern" in out
    assert f"{prefix}spec.steps[1].dependOn: Extra inputs are not permitted" in out
    assert (
        f"{prefix}spec.steps[1].timeoutSeconds: Input should be greater than or equal to 1" in out
    )


def test_wrong_api_version_and_unknown_kind_of_our_group(tmp_path: Path) -> None:
    old = workflow_doc("old") | {"apiVersion": "agentflow.dev/v1"}
    odd = {"apiVersion": "agentflow.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "p"}}
    result = run("validate", write(tmp_path, "x.yaml", old, odd))
    assert result.exit_code == 1
    assert "Workflow/old: apiVersion: 'agentflow.dev/v1' is not served" in result.stdout
    assert "Pipeline/p: kind: unknown kind 'Pipeline' in agentflow.dev" in result.stdout


def test_other_kinds_are_skipped_with_a_note(tmp_path: Path) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}}
    # Another project's kind called Workflow is not ours either.
    foreign = {"apiVersion": "example.org/v1", "kind": "Workflow", "metadata": {"name": "w"}}
    path = write(tmp_path, "mixed.yaml", config, foreign, workflow_doc("mine"))
    result = run("validate", path)
    assert result.exit_code == 0, result.output
    assert f"note: {path}: ConfigMap/settings: skipped (not an agentflow resource)" in result.stdout
    assert f"note: {path}: Workflow/w: skipped" in result.stdout
    assert f"OK {path}: Workflow/mine" in result.stdout


def test_a_policy_in_another_file_satisfies_the_reference(tmp_path: Path) -> None:
    policy = {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "AgentFallbackPolicy",
        "metadata": {"name": "nowhere"},
        "spec": {"rules": []},
    }
    result = run("validate", str(BROKEN / "missing-policy.yaml"), write(tmp_path, "p.yaml", policy))
    assert result.exit_code == 0, result.output


def test_the_namespace_default_policy_applies_to_workflows_without_a_reference(
    tmp_path: Path,
) -> None:
    policy = {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "AgentFallbackPolicy",
        "metadata": {"name": "default"},
        "spec": {"rules": [], "default": {"fallback": "spare"}},
    }
    path = write(tmp_path, "p.yaml", policy, workflow_doc("plain"))
    result = run("validate", path)
    assert result.exit_code == 1
    assert (
        f"{path}: Workflow/plain: spec.agents: fallback agent 'spare' of agent 'worker' "
        "(AgentFallbackPolicy/default) is not declared"
    ) in result.stdout


def test_good_files_stay_ok_next_to_a_bad_one_and_unreadable_files_are_named() -> None:
    result = run(
        "validate", "workflows/health-check.yaml", str(BROKEN / "cycle.yaml"), "does/not/exist.yaml"
    )
    assert result.exit_code == 1
    assert "OK workflows/health-check.yaml: Workflow/health-check" in result.stdout
    assert "does/not/exist.yaml: cannot read: No such file or directory" in result.stdout
    assert "2 error(s); 1 of 2 resource(s) valid" in result.stderr


# ---- graph ------------------------------------------------------------------------------


def test_mermaid_graph_of_a_sequence() -> None:
    result = run("graph", "workflows/finance-feature.yaml")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    assert '    s_implement["implement<br/>agent: code-generator"]' in lines
    edges = [line.strip() for line in lines if "-->" in line]
    assert edges == [
        "s_validate_requirements --> s_implement",
        "s_implement --> s_write_tests",
        "s_write_tests --> s_review",
    ]


def test_mermaid_graph_marks_conditional_steps_with_their_condition() -> None:
    result = run("graph", "workflows/release-review.yaml", "--format", "mermaid")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert (
        's_performance_review{{"performance-review<br/>agent: reviewer<br/>'
        "when: size(steps['diff-analysis'].artifacts) #gt; 100\"}}"
    ) in out
    assert "class s_security_audit,s_performance_review conditional" in out
    edges = sorted(line.strip() for line in out.splitlines() if "-->" in line)
    assert edges == [
        "s_changelog --> s_release_notes",
        "s_diff_analysis --> s_performance_review",
        "s_diff_analysis --> s_security_audit",
        "s_security_audit --> s_release_notes",
    ]


def test_dot_graph_marks_repeated_steps_with_until() -> None:
    result = run("graph", "workflows/performance-optimization.yaml", "--format", "dot")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('digraph "performance-optimization" {')
    assert (
        '"optimize" [label="optimize\\nagent: optimizer\\nrepeat until: '
        'result.metrics.extra.p95LatencyMs < 200 (max 5)", peripheries=2];'
    ) in result.stdout
    assert '"profile" -> "optimize";' in result.stdout
    assert result.stdout.rstrip().endswith("}")


def test_graph_escapes_quotes_in_labels(tmp_path: Path) -> None:
    doc = workflow_doc(
        "quoted",
        strategy="DAG",
        steps=[
            {"name": "a", "agent": "worker"},
            {"name": "b", "agent": "worker", "dependsOn": ["a"], "when": 'steps.a.status == "ok"'},
        ],
    )
    path = write(tmp_path, "q.yaml", doc)
    mermaid = run("graph", path)
    assert "when: steps.a.status == #quot;ok#quot;" in mermaid.stdout
    dot = run("graph", path, "--format", "dot")
    assert 'when: steps.a.status == \\"ok\\"", style=dashed' in dot.stdout


def test_graph_needs_a_name_when_the_file_has_several_workflows(tmp_path: Path) -> None:
    path = write(tmp_path, "two.yaml", workflow_doc("one"), workflow_doc("two"))
    result = run("graph", path)
    assert result.exit_code == 1
    assert "2 Workflows (one, two): pick one with --name" in result.stderr
    chosen = run("graph", path, "--name", "two")
    assert chosen.exit_code == 0
    assert "%% Workflow two" in chosen.stdout
    missing = run("graph", path, "--name", "three")
    assert missing.exit_code == 1 and "no Workflow named 'three'" in missing.stderr


def test_graph_of_an_invalid_graph_still_draws_but_warns() -> None:
    result = run("graph", str(BROKEN / "cycle.yaml"))
    assert result.exit_code == 0
    assert "s_a --> s_b" in result.stdout and "s_b --> s_a" in result.stdout
    assert "warning: " in result.stderr and "dependency cycle a -> b -> a" in result.stderr


# ---- no cluster -------------------------------------------------------------------------


@pytest.fixture
def closed_port_kubeconfig(tmp_path: Path) -> Iterator[tuple[str, int]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "gone",
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "insecure-skip-tls-verify": True,
                },
            }
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
        "current-context": "gone",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    yield str(path), port


@pytest.mark.parametrize(
    "command",
    [
        ["get"],
        ["get", "-A"],
        ["describe", "x"],
        ["logs", "x", "step"],
        ["retry", "x"],
        ["rerun", "x"],
        ["suspend", "x"],
        ["resume", "x"],
        ["cache", "ls"],
        ["cache", "purge"],
        ["submit", "workflows/health-check.yaml"],
    ],
    ids=lambda c: " ".join(c),
)
def test_no_cluster_gives_one_line_and_exit_code_3(
    closed_port_kubeconfig: tuple[str, int], command: list[str]
) -> None:
    kubeconfig, port = closed_port_kubeconfig
    result = run("--kubeconfig", kubeconfig, *command)
    assert result.exit_code == 3, result.output
    assert result.stderr.strip() == (
        f"cannot reach the Kubernetes API at https://127.0.0.1:{port}: connection refused. "
        "Is the cluster running? Try `make cluster-up`."
    )
    assert "Traceback" not in result.output


def test_missing_kubeconfig_is_exit_code_3(tmp_path: Path) -> None:
    result = run("--kubeconfig", str(tmp_path / "nope"), "get")
    assert result.exit_code == 3
    assert result.stderr.startswith(f"no usable kubeconfig ({tmp_path / 'nope'})")


def test_submit_validates_before_contacting_the_cluster(
    closed_port_kubeconfig: tuple[str, int],
) -> None:
    kubeconfig, _ = closed_port_kubeconfig
    result = run("--kubeconfig", kubeconfig, "submit", str(BROKEN / "cycle.yaml"))
    assert result.exit_code == 1  # 3 would mean it tried the (unreachable) cluster
    assert "dependency cycle a -> b -> a" in result.stderr


def _with_inputs(tmp_path: Path, **extra: Any) -> str:
    doc = workflow_doc(
        arguments=[
            {"name": "target", "description": "where to deploy"},
            {"name": "level", "default": "1"},
        ],
        steps=[{"name": "only", "agent": "worker", "prompt": "deploy {{ inputs.target }}"}],
        **extra,
    )
    return write(tmp_path, "inputs.yaml", doc)


def test_validate_reports_a_required_input_and_takes_parameters(tmp_path: Path) -> None:
    path = _with_inputs(tmp_path)
    result = run("validate", path)
    assert result.exit_code == 1
    assert (
        "Workflow/wf: spec.arguments[0]: input target is required: set its value"
        " (agentflow submit -p target=...) or a default"
    ) in result.stdout
    result = run("validate", path, "-p", "target=prod")
    assert result.exit_code == 0, result.output
    assert "1 resource(s) valid" in result.stdout


def test_param_files_in_yaml_and_json_and_p_wins(tmp_path: Path) -> None:
    path = _with_inputs(tmp_path)
    from agentflow.console.documents import load_file
    from agentflow.console.params import parse_parameters, set_parameters

    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("target: staging\nlevel: 3\n")
    json_file = tmp_path / "p.json"
    json_file.write_text('{"level": true}')
    values = parse_parameters(["target=a=b"], [str(yaml_file), str(json_file)])
    assert values == {"target": "a=b", "level": "true"}
    [doc] = set_parameters(load_file(path), values)
    assert doc.body["spec"]["arguments"] == [
        {"name": "target", "description": "where to deploy", "value": "a=b"},
        {"name": "level", "default": "1", "value": "true"},
    ]
    result = run("validate", path, "--param-file", str(yaml_file))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        (
            ["-p", "ghost=1", "-p", "other=2"],
            None,
            "-p ghost, other: no Workflow of the files"
            " declares these inputs in spec.arguments (declared: level, target)",
        ),
        (["-p", "noequals"], None, "-p noequals: expected name=value"),
        (["--param-file", "{file}"], "- a\n- b\n", "expected a mapping of names to values"),
        (["--param-file", "{file}"], "target: [1]\n", "target: expected a string, not list"),
        (["--param-file", "{file}"], "target: {{\n", "invalid YAML or JSON"),
    ],
)
def test_bad_parameters_are_named(
    tmp_path: Path, args: list[str], content: str | None, message: str
) -> None:
    path = _with_inputs(tmp_path)
    params = tmp_path / "params.yaml"
    if content is not None:
        params.write_text(content)
    args = [a.replace("{file}", str(params)) for a in args]
    for command in ("validate", "submit"):
        result = run(command, path, *args)
        assert result.exit_code == 1, result.output
        assert message in result.stderr, result.stderr


def test_submit_checks_parameters_before_contacting_the_cluster(
    tmp_path: Path, closed_port_kubeconfig: tuple[str, int]
) -> None:
    kubeconfig, _ = closed_port_kubeconfig
    path = _with_inputs(tmp_path)
    result = run("--kubeconfig", kubeconfig, "submit", path)
    assert result.exit_code == 1  # 3 would mean it tried the (unreachable) cluster
    assert "input target is required" in result.stderr
    result = run("--kubeconfig", kubeconfig, "submit", path, "-p", "target=x")
    assert result.exit_code == 3  # valid with the parameter: it went on to the cluster


def test_validate_type_checks_conditions_naming_the_field(tmp_path: Path) -> None:
    doc = workflow_doc(
        steps=[
            {"name": "a", "agent": "worker"},
            {"name": "b", "agent": "worker", "when": "steps.a.metrics.extra.score >= 80"},
            {"name": "c", "agent": "worker", "when": "steps.a.metrics.score >= 80"},
            {"name": "d", "agent": "worker", "repeat": {"until": "result.summary > 3"}},
        ]
    )
    result = run("validate", write(tmp_path, "typed.yaml", doc))
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if "Workflow/wf:" in line]
    assert len(lines) == 2, result.stdout
    assert lines[0].endswith(
        "Workflow/wf: spec.steps[2].when: steps.a.metrics has no field 'score' (Metrics fields:"
        " toolCalls, filesRead, linesGenerated, errors, inputTokens, outputTokens, extra); a"
        " metric of the report's extra metrics is steps.a.metrics.extra.score"
    )
    assert lines[1].endswith(
        "Workflow/wf: spec.steps[3].repeat.until: cannot order result.summary (string) with 3 (int)"
    )


def test_graph_of_a_workflow_with_a_required_input_takes_it_with_p(tmp_path: Path) -> None:
    path = _with_inputs(tmp_path)
    assert run("graph", path).exit_code == 1
    result = run("graph", path, "-p", "target=prod")
    assert result.exit_code == 0, result.output
    assert "only" in result.stdout


def test_validate_accepts_generate_name(tmp_path: Path) -> None:
    doc = workflow_doc()
    doc["metadata"] = {"generateName": "run-"}
    result = run("validate", write(tmp_path, "gen.yaml", doc))
    assert result.exit_code == 0, result.output


def test_the_operator_command_is_still_there() -> None:
    result = run("operator", "--help")
    assert result.exit_code == 0
    for option in ("--metrics-port", "--metrics-host", "--log-format", "--kubeconfig"):
        assert option in result.stdout


def test_the_operator_fails_at_once_on_a_taken_metrics_port() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = run("operator", "--metrics-host", "127.0.0.1", "--metrics-port", str(port))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"metrics port {port} on 127.0.0.1 is already in use by another process: choose "
        "another with --metrics-port or AGENTFLOW_METRICS_PORT (0 picks a free port)"
    )


def test_dev_help_documents_restart_operator_status_and_metrics_port() -> None:
    result = CliRunner().invoke(app, ["dev", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for option in ("--restart-operator", "--status", "--stop", "--metrics-port"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stop", "--status"], "--status and --stop do not go together: pick one"),
        (
            ["--restart-operator", "--stop"],
            "--restart-operator and --stop do not go together: pick one",
        ),
        (["--status", "--metrics-port", "9000"], "--metrics-port does not go with --status"),
    ],
)
def test_dev_rejects_flags_that_do_not_go_together(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run("dev", "--state-dir", str(tmp_path), *args)
    assert result.exit_code == 1
    assert result.stderr.strip() == message


def test_dev_restart_operator_needs_a_running_cluster(tmp_path: Path) -> None:
    result = run("dev", "--restart-operator", "--state-dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"no local cluster is running in {tmp_path}: start it with "
        f"`agentflow dev --state-dir {tmp_path}` (or `make dev`)"
    )
    assert not (tmp_path / "operator.json").exists()


def test_dev_status_exits_1_when_nothing_runs(tmp_path: Path) -> None:
    result = run("dev", "--status", "--state-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "cluster: not running" in result.stdout
    assert "operator: not running" in result.stdout


# ---- views ------------------------------------------------------------------------------


def render(*renderables: Any) -> str:
    console = Console(record=True, width=200, force_terminal=False)
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


def finished_workflow() -> dict[str, Any]:
    started = NOW - timedelta(minutes=3)
    validate = StepStatus(
        name="validate",
        phase=StepPhase.SUCCEEDED,
        agent="checker",
        iteration=1,
        cache_key="sha256:abc",
        attempts=[
            Attempt(
                attempt=1,
                agent="checker",
                job_name="wf-validate-1",
                outcome="Failed",
                exit_code=2,
                reason="QualityGateFailed",
                message="QualityGateFailed: accept: result.metrics.extra.score >= 80 was false "
                "(score = 42)",
                started_at=started,
                finished_at=started + timedelta(seconds=5),
            ),
            Attempt(
                attempt=2,
                agent="checker-backup",
                job_name="wf-validate-2",
                fallback=True,
                outcome="Succeeded",
                exit_code=0,
                started_at=started + timedelta(seconds=6),
                finished_at=started + timedelta(seconds=9),
            ),
        ],
        fallback_used=True,
        result=StepResult(
            summary="Validated the VAT rules.",
            artifacts=[Artifact(path="vat.ts", action="created")],
            metrics=StepMetrics(tool_calls=5, extra={"p95LatencyMs": 180.0}),
            output_ref="wf-validate-2-output",
            truncated=True,
        ),
    )
    status = WorkflowStatus(
        phase=WorkflowPhase.SUCCEEDED,
        degraded=True,
        run=1,
        progress="2/2",
        observed_generation=1,
        message="2 succeeded",
        conditions=[
            Condition(
                type="Ready",
                status="True",
                reason="Succeeded",
                message="2 succeeded",
                last_transition_time=NOW - timedelta(seconds=30),
            ),
            Condition(
                type="Degraded",
                status="True",
                reason="FallbackUsed",
                message="fallback agents ran for: validate",
                last_transition_time=NOW - timedelta(seconds=30),
            ),
        ],
        steps=[
            validate,
            StepStatus(
                name="publish",
                phase=StepPhase.CACHED,
                agent="writer",
                result=StepResult(summary="Published."),
            ),
        ],
    )
    return {
        "metadata": {
            "name": "wf",
            "namespace": "team",
            "generation": 1,
            "uid": "u1",
            "creationTimestamp": (NOW - timedelta(minutes=5)).isoformat(),
        },
        "spec": {
            "steps": [
                {
                    "name": "validate",
                    "agent": "checker",
                    "accept": "result.metrics.extra.score >= 80",
                },
                {"name": "publish", "agent": "writer"},
            ]
        },
        "status": status.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }


def test_the_steps_table_shows_phase_agent_attempts_fallback_cache_and_summary() -> None:
    text = render(views.steps_table(finished_workflow()))
    header, validate, publish = text.splitlines()[:3]
    assert header.split() == [
        "STEP",
        "PHASE",
        "AGENT",
        "ATTEMPTS",
        "FALLBACK",
        "CACHE",
        "ITERATION",
        "SUMMARY",
    ]
    assert validate.split() == [
        "validate",
        "Succeeded",
        "checker",
        "2",
        "yes",
        "miss",
        "1",
        "Validated",
        "the",
        "VAT",
        "rules.",
    ]
    assert publish.split() == ["publish", "Cached", "writer", "hit", "Published."]


def test_a_workflow_without_status_lists_its_spec_steps_as_pending() -> None:
    obj = finished_workflow()
    del obj["status"]
    text = render(views.workflow_view(obj))
    assert "team/wf  waiting for the operator" in text
    assert [line.split()[:2] for line in text.splitlines()[2:4]] == [
        ["validate", "Pending"],
        ["publish", "Pending"],
    ]


def test_describe_shows_results_attempts_conditions_and_events() -> None:
    events = [
        {
            "type": "Warning",
            "reason": "FallbackUsed",
            "message": "checker-backup ran",
            "lastTimestamp": (NOW - timedelta(seconds=90)).isoformat(),
            "count": 1,
        }
    ]
    text = render(*views.describe(finished_workflow(), events, NOW))
    assert "Degraded: fallback agents ran for: validate" in text
    assert "summary: Validated the VAT rules." in text
    assert "artifacts: vat.ts (created)" in text
    assert "metrics: toolCalls=5, p95LatencyMs=180" in text
    assert "full report: ConfigMap wf-validate-2-output (truncated in status)" in text
    assert (
        "attempt 1 (iteration 1): agent checker, job wf-validate-1, Failed, exit code 2, "
        "class QualityGateFailed: accept: result.metrics.extra.score >= 80 was false (score = 42)"
    ) in text
    assert "  accept: result.metrics.extra.score >= 80\n" in text
    assert "attempt 2 (iteration 1): agent checker-backup (fallback), job wf-validate-2" in text
    assert any(
        line.split()[:3] == ["Degraded", "True", "FallbackUsed"] for line in text.splitlines()
    )
    assert any(
        line.split()[:4] == ["90s", "Warning", "FallbackUsed", "checker-backup"]
        for line in text.splitlines()
    )


def test_describe_shows_the_inputs_and_no_line_without_them() -> None:
    obj = finished_workflow()
    assert "Inputs:" not in render(*views.describe(obj, [], NOW))
    obj["spec"]["arguments"] = [
        {"name": "target", "value": "prod", "default": "staging"},
        {"name": "level", "default": "3"},
    ]
    text = render(*views.describe(obj, [], NOW))
    assert any(line.split() == ["Inputs:", "target=prod,", "level=3"] for line in text.splitlines())


def test_workflows_table_columns() -> None:
    text = render(views.workflows_table([finished_workflow()], True, NOW))
    header, row = text.splitlines()[:2]
    assert header.split() == [
        "NAMESPACE",
        "NAME",
        "PHASE",
        "PROGRESS",
        "DEGRADED",
        "AGE",
        "MESSAGE",
    ]
    assert row.split() == ["team", "wf", "Succeeded", "2/2", "true", "5m", "2", "succeeded"]


def test_cache_rows_and_table() -> None:
    cm = {
        "metadata": {
            "name": "agentflow-cache-1",
            "namespace": "team",
            "labels": {"agentflow.dev/cache": "true", "agentflow.dev/step": "build"},
            "annotations": {
                "agentflow.dev/cache-key": "sha256:0123456789abcdef0123",
                "agentflow.dev/created-at": (NOW - timedelta(hours=3)).isoformat(),
                "agentflow.dev/expires-at": (NOW - timedelta(minutes=10)).isoformat(),
            },
        }
    }
    row = CacheRow.of(cm)
    assert row.step == "build" and row.expired(NOW)
    assert not row.expired(NOW - timedelta(hours=1))
    text = render(views.cache_table([row], NOW, False))
    assert text.splitlines()[1].split() == [
        "agentflow-cache-1",
        "build",
        "sha256:012345678",
        "3h",
        "ago",
        "expired",
        "10m",
        "ago",
    ]


def test_durations_read_like_kubectl() -> None:
    assert [duration(s) for s in (0, 119, 120, 7199, 7200, 172_799, 172_800)] == [
        "0s",
        "119s",
        "2m",
        "119m",
        "2h",
        "47h",
        "2d",
    ]


def test_a_status_is_current_only_for_the_latest_spec_and_requests() -> None:
    obj = finished_workflow()
    assert views.is_current(obj)
    obj["metadata"]["generation"] = 2  # edited since: the status is the earlier run's
    assert not views.is_current(obj)
    obj["metadata"]["generation"] = 1
    obj["metadata"]["annotations"] = {"agentflow.dev/rerun": "t1"}
    assert not views.is_current(obj)
    obj["status"]["rerunToken"] = "t1"
    assert views.is_current(obj)


# ---- watch ------------------------------------------------------------------------------


class ScriptedCluster:
    """Answers get_workflow with a list of snapshots, one per poll (the last one repeats)."""

    def __init__(self, snapshots: list[dict[str, Any]]) -> None:
        self.snapshots = snapshots
        self.polls = 0

    def get_workflow(self, namespace: str, name: str) -> dict[str, Any]:
        snapshot = self.snapshots[min(self.polls, len(self.snapshots) - 1)]
        self.polls += 1
        return snapshot


def with_phase(obj: dict[str, Any], phase: str, generation: int = 1) -> dict[str, Any]:
    copy = yaml.safe_load(yaml.safe_dump(obj))
    copy["status"]["phase"] = phase
    copy["status"]["observedGeneration"] = generation
    return copy


def follow(snapshots: list[dict[str, Any]], timeout: float | None = None) -> tuple[int, str, int]:
    cluster = ScriptedCluster(snapshots)
    console = Console(record=True, width=200, force_terminal=False)
    code = watch(
        cluster,
        [("team", "wf")],
        console,
        timeout=timeout,  # type: ignore[arg-type]
        interval=0,
        sleep=lambda _: None,
    )
    return code, console.export_text(), cluster.polls


def test_watch_waits_for_a_current_terminal_status_and_reports_success() -> None:
    base = finished_workflow()
    base["metadata"]["generation"] = 2
    stale = with_phase(base, "Succeeded", generation=1)  # the previous run's result
    running = with_phase(base, "Running", generation=2)
    done = with_phase(base, "Succeeded", generation=2)
    code, text, polls = follow([stale, running, done])
    assert code == 0 and polls == 3
    assert "workflow team/wf Succeeded: 2 succeeded" in text
    assert "team/wf: step validate Succeeded (agent checker): Validated the VAT rules." in text


def test_watch_exit_codes_for_failure_and_timeout() -> None:
    failed = with_phase(finished_workflow(), "Failed")
    failed["status"]["message"] = "step validate failed: exit code 2"
    code, text, _ = follow([failed])
    assert code == 1 and "workflow team/wf Failed: step validate failed: exit code 2" in text
    running = with_phase(finished_workflow(), "Running")
    code, text, _ = follow([running], timeout=0)
    assert code == 2 and "timed out after 0s" in text


def test_watch_reports_a_deleted_workflow() -> None:
    class Gone:
        def get_workflow(self, namespace: str, name: str) -> dict[str, Any]:
            raise ConsoleError("workflow 'wf' not found in namespace 'team'", 4)

    with pytest.raises(ConsoleError) as caught:
        watch(Gone(), [("team", "wf")], Console(), interval=0)  # type: ignore[arg-type]
    assert caught.value.exit_code == 4


@pytest.fixture
def refusing_server(tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    """A kubeconfig of an API server that answers every request with the Status of the first
    code in the list it yields (change it to change the answer)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    codes = [403]

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = {"kind": "Status", "status": "Failure", "message": f"no {self.path}"}
            body = json.dumps({**status, "code": codes[0]}).encode()
            self.send_response(codes[0])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    try:
        yield str(path), codes
    finally:
        server.shutdown()
        server.server_close()


def test_the_cli_raises_the_operators_api_error_and_maps_it_to_its_exit_code(
    refusing_server: tuple[str, list[int]],
) -> None:
    """One API error for the product: the CLI's client raises the class the operator's raises,
    and the CLI gives its message and exit code (4 for 404, else 1)."""
    from agentflow.console.cluster import Cluster, Target
    from agentflow.kube import ApiError

    kubeconfig, codes = refusing_server
    with pytest.raises(ApiError) as raised:
        Cluster(Target(kubeconfig=kubeconfig)).request("GET", "/api/v1/x")
    assert (raised.value.status, raised.value.message) == (403, "no /api/v1/x")
    listing = "/apis/agentflow.dev/v1alpha1/namespaces/default/workflows"
    result = run("--kubeconfig", kubeconfig, "get")
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"the API server refused (403): no {listing}"
    codes[0] = 404
    result = run("--kubeconfig", kubeconfig, "get")
    assert result.exit_code == 4, result.output
    assert result.stderr.strip() == f"the API server refused (404): no {listing}"


def test_describe_shows_the_usage_the_budget_and_each_attempts_tokens() -> None:
    obj = finished_workflow()
    obj["spec"]["budget"] = {"maxTokens": 1000, "maxCost": "0.5"}
    attempt_usage = {"inputTokens": 300, "outputTokens": 200, "cost": "0.0039"}
    step_status = obj["status"]["steps"][0]
    step_status["attempts"][-1]["usage"] = attempt_usage
    step_status["attempts"][-1]["concurrencyLimit"] = "anthropic"
    step_status["usage"] = attempt_usage
    obj["status"]["usage"] = {
        "inputTokens": 300,
        "outputTokens": 200,
        "totalTokens": 500,
        "cost": "0.0039",
        "unpricedTokens": 40,
        "currency": "USD",
        "agents": [{"agent": "checker-backup", **attempt_usage}],
    }
    text = render(*views.describe(obj, [], NOW))
    assert "Usage:            300 in, 200 out, cost 0.0039 USD (40 tokens without a price)" in text
    assert "Budget:           500 of 1000 tokens, cost 0.0039 of 0.5 USD" in text
    assert "checker-backup: 300 in, 200 out, cost 0.0039 USD" in text
    assert "  usage: 300 in, 200 out, cost 0.0039 USD" in text
    assert "300 in, 200 out, cost 0.0039 USD, limit anthropic" in text
