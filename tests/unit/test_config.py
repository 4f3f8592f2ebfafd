"""The operator's configuration: one typed, validated object from the flags and environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentflow.cli import OPERATOR_FLAGS
from agentflow.config import VARIABLES, ConfigError, OperatorConfig, load_config


def test_no_settings_give_the_documented_defaults() -> None:
    config = load_config({})
    assert config.namespaces == ()
    assert (config.metrics_host, config.metrics_port, config.metrics_auth) == (
        "0.0.0.0",
        8080,
        False,
    )
    assert (config.qps, config.burst) == (50.0, 100)
    assert (config.lease_name, config.lease_namespace) == ("agentflow-operator", "default")
    assert (config.lease_duration, config.renew_interval) == (15.0, 5.0)
    assert config.cache_sweep_interval == 60.0
    assert config.allowed_images is None and config.allowed_secrets is None
    assert config.max_jobs_per_namespace is None
    assert (config.job.ttl_seconds_after_finished, config.job.service_account_name) == (3600, None)


def test_every_variable_reaches_its_setting() -> None:
    config = load_config(
        {
            "AGENTFLOW_NAMESPACES": "team-a, team-b",
            "AGENTFLOW_LOG_FORMAT": "text",
            "AGENTFLOW_METRICS_HOST": "127.0.0.1",
            "AGENTFLOW_METRICS_PORT": "9090",
            "AGENTFLOW_METRICS_AUTH": "true",
            "AGENTFLOW_METRICS_AGENTS_PER_NAMESPACE": "7",
            "AGENTFLOW_ALLOWED_IMAGES": "a:1,b:2",
            "AGENTFLOW_ALLOWED_SECRETS": "llm-*,github",
            "AGENTFLOW_MAX_JOBS_PER_NAMESPACE": "3",
            "AGENTFLOW_JOB_TTL_SECONDS": "60",
            "AGENTFLOW_STEP_SERVICE_ACCOUNT": "agentflow-step",
            "AGENTFLOW_API_QPS": "12.5",
            "AGENTFLOW_API_BURST": "20",
            "AGENTFLOW_LEASE_NAME": "my-lease",
            "POD_NAMESPACE": "agentflow-system",
            "AGENTFLOW_LEASE_DURATION": "6",
            "AGENTFLOW_LEASE_RENEW_INTERVAL": "2",
            "AGENTFLOW_CACHE_SWEEP_SECONDS": "3",
            "KUBECONFIG": "/tmp/kubeconfig",
        }
    )
    assert config.namespaces == ("team-a", "team-b")
    assert config.log_format == "text"
    assert (config.metrics_host, config.metrics_port, config.metrics_auth) == (
        "127.0.0.1",
        9090,
        True,
    )
    assert config.metrics_agents_per_namespace == 7
    assert config.allowed_images == frozenset({"a:1", "b:2"})
    assert config.allowed_secrets == ("llm-*", "github")
    assert config.max_jobs_per_namespace == 3
    assert (config.job.ttl_seconds_after_finished, config.job.service_account_name) == (
        60,
        "agentflow-step",
    )
    assert (config.qps, config.burst) == (12.5, 20)
    assert (config.lease_name, config.lease_namespace) == ("my-lease", "agentflow-system")
    assert (config.lease_duration, config.renew_interval) == (6.0, 2.0)
    assert config.cache_sweep_interval == 3.0
    assert config.kubeconfig == "/tmp/kubeconfig"


def test_every_setting_but_the_identity_and_output_limit_has_a_variable() -> None:
    assert set(OperatorConfig.model_fields) - set(VARIABLES) == {"identity", "output_limit_bytes"}
    assert set(OPERATOR_FLAGS) <= set(VARIABLES)


def test_the_lease_namespace_is_the_pods_own_and_nothing_else_moves_it() -> None:
    # AGENTFLOW_LEASE_NAMESPACE was how the chart put the Lease into a watched namespace.
    config = load_config(
        {"POD_NAMESPACE": "agentflow-system", "AGENTFLOW_LEASE_NAMESPACE": "team-a"}
    )
    assert config.lease_namespace == "agentflow-system"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AGENTFLOW_API_QPS": "abc"}, "AGENTFLOW_API_QPS='abc': not a number"),
        ({"AGENTFLOW_API_QPS": "0"}, "AGENTFLOW_API_QPS='0': must be greater than 0"),
        ({"AGENTFLOW_API_BURST": "1.5"}, "AGENTFLOW_API_BURST='1.5': not a whole number"),
        (
            {"AGENTFLOW_METRICS_PORT": "70000"},
            "AGENTFLOW_METRICS_PORT='70000': must be at most 65535",
        ),
        ({"AGENTFLOW_METRICS_AUTH": "maybe"}, "AGENTFLOW_METRICS_AUTH='maybe': not true or false"),
        ({"AGENTFLOW_LOG_FORMAT": "xml"}, "AGENTFLOW_LOG_FORMAT='xml': must be 'json' or 'text'"),
        (
            {"AGENTFLOW_MAX_JOBS_PER_NAMESPACE": "0"},
            "AGENTFLOW_MAX_JOBS_PER_NAMESPACE='0': must be at least 1",
        ),
        (
            {"AGENTFLOW_CACHE_SWEEP_SECONDS": "soon"},
            "AGENTFLOW_CACHE_SWEEP_SECONDS='soon': not a number",
        ),
        (
            {"AGENTFLOW_LEASE_DURATION": "4", "AGENTFLOW_LEASE_RENEW_INTERVAL": "5"},
            "AGENTFLOW_LEASE_RENEW_INTERVAL=5 must be shorter than AGENTFLOW_LEASE_DURATION=4",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_and_the_value(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(environ)
    assert message in str(refused.value)


def test_every_bad_setting_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({"AGENTFLOW_API_QPS": "abc", "AGENTFLOW_API_BURST": "-1"})
    assert "AGENTFLOW_API_QPS='abc'" in str(refused.value)
    assert "AGENTFLOW_API_BURST='-1': must be at least 1" in str(refused.value)


def test_flags_win_over_the_environment_and_a_bad_flag_is_named_as_a_flag() -> None:
    environ = {"AGENTFLOW_METRICS_PORT": "9090", "AGENTFLOW_NAMESPACES": "team-a"}
    config = load_config(environ, {"metrics_port": 8081, "namespaces": ()}, OPERATOR_FLAGS)
    assert (config.metrics_port, config.namespaces) == (8081, ())
    # A flag that was not given (None) leaves the variable's value.
    assert load_config(environ, {"metrics_port": None}, OPERATOR_FLAGS).metrics_port == 9090
    with pytest.raises(ConfigError) as refused:
        load_config(environ, {"metrics_port": 70000}, OPERATOR_FLAGS)
    assert "--metrics-port=70000: must be at most 65535" in str(refused.value)


def test_empty_variables_are_unset_except_for_the_secret_allow_list() -> None:
    config = load_config(
        {"AGENTFLOW_API_QPS": "", "AGENTFLOW_ALLOWED_IMAGES": " ", "AGENTFLOW_ALLOWED_SECRETS": ""}
    )
    assert config.qps == 50.0
    assert config.allowed_images is None
    # Set but empty: the switch is on and allows no Secret at all (failing closed).
    assert config.allowed_secrets == ()


def test_the_configuration_cannot_change_once_built() -> None:
    config = load_config({})
    with pytest.raises(ValueError, match="frozen"):
        config.qps = 1.0  # type: ignore[misc]


RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"


def settings_table() -> dict[str, list[str]]:
    """The runbook's table of operator settings: variable -> its row's cells."""
    text = RUNBOOK.read_text()
    section = text[text.index("### Operator settings") :]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_the_runbook_documents_every_setting_its_flag_and_its_default() -> None:
    rows = settings_table()
    assert set(rows) == set(VARIABLES.values())
    defaults = load_config({})
    for field, variable in VARIABLES.items():
        _, flag, _, default, _ = rows[variable]
        if field in OPERATOR_FLAGS:
            assert f"`{OPERATOR_FLAGS[field]}`" in flag, variable
        else:
            assert flag == "", variable
        literal = re.fullmatch(r"`([^`]*)`", default)
        if literal is not None:
            value = getattr(defaults, field)
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            assert literal.group(1) == shown, variable


def test_the_price_table_and_the_concurrency_limits_come_as_json() -> None:
    from decimal import Decimal

    from agentflow.engine.usage import ConcurrencyRule, Price

    config = load_config(
        {
            "AGENTFLOW_PRICES": '{"currency": "EUR", "models": [{"provider": "anthropic",'
            ' "model": "m", "inputPerMillion": "3.10", "outputPerMillion": 15}]}',
            "AGENTFLOW_CONCURRENCY_LIMITS": '[{"name": "llm", "provider": "anthropic",'
            ' "max": 2}, {"name": "key", "secret": "team-*", "max": 1}]',
        }
    )
    table = config.price_table
    assert table.currency == "EUR"
    assert table.price("anthropic", "m") == Price(Decimal("3.10"), Decimal("15"))
    assert table.price("anthropic", "other") is None
    assert config.concurrency_rules == (
        ConcurrencyRule(name="llm", max=2, provider="anthropic"),
        ConcurrencyRule(name="key", max=1, secret="team-*"),
    )
    # The flags take the same JSON, and win.
    flagged = load_config(
        {"AGENTFLOW_CONCURRENCY_LIMITS": '[{"name": "a", "max": 1}]'},
        {"concurrency_limits": '[{"name": "b", "max": 3}]'},
        OPERATOR_FLAGS,
    )
    assert [r.name for r in flagged.concurrency_rules] == ["b"]
    # Nothing given: no prices (tokens without cost), no limits.
    assert load_config({}).price_table.prices == {}
    assert load_config({}).concurrency_rules == ()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AGENTFLOW_PRICES": "{"}, "AGENTFLOW_PRICES: not JSON"),
        (
            {
                "AGENTFLOW_PRICES": '{"models": [{"model": "m", "inputPerMillion": "-1",'
                ' "outputPerMillion": "1"}]}'
            },
            "AGENTFLOW_PRICES.models[0].inputPerMillion: must be at least 0",
        ),
        (
            {"AGENTFLOW_CONCURRENCY_LIMITS": '[{"name": "a", "max": 0}]'},
            "AGENTFLOW_CONCURRENCY_LIMITS[0].max: must be at least 1",
        ),
        (
            {"AGENTFLOW_CONCURRENCY_LIMITS": '[{"name": "Bad Name", "max": 1}]'},
            "AGENTFLOW_CONCURRENCY_LIMITS[0].name",
        ),
        (
            {"AGENTFLOW_CONCURRENCY_LIMITS": '[{"name": "a", "max": 1}, {"name": "a", "max": 2}]'},
            "each concurrency limit needs a name of its own",
        ),
    ],
)
def test_a_bad_price_table_or_limit_names_the_place(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    assert message in str(caught.value)
