"""cache_key: content-addressed, canonical, and blind to secret values."""

from __future__ import annotations

from typing import Any

from agentflow.api.models import AgentTemplate, EnvVar
from agentflow.engine import cache_key, resolve_agent
from agentflow.engine.caching import CACHE_KEY_VERSION
from tests.support.world import step, workflow

AGENT = AgentTemplate.model_validate(
    {
        "name": "coder",
        "image": "ex/coder:1",
        "command": ["run"],
        "args": ["--fast"],
        "model": "m1",
        "env": [
            {"name": "MODE", "value": "strict"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
        ],
    }
)
UPSTREAM = {"plan": "sha256:" + "1" * 64, "fetch": "sha256:" + "2" * 64}


def key(agent: AgentTemplate = AGENT, **changes: Any) -> str:
    args = {"prompt": "do it", "upstream_digests": UPSTREAM, "iteration": 1, **changes}
    return cache_key(agent, args["prompt"], args["upstream_digests"], args["iteration"])


def changed(**fields: Any) -> AgentTemplate:
    return AGENT.model_copy(update=fields)


def test_key_is_a_stable_sha256() -> None:
    assert key() == key()
    assert key().startswith("sha256:") and len(key()) == len("sha256:") + 64
    assert CACHE_KEY_VERSION  # part of the key: bumping it invalidates old entries


def test_every_input_changes_the_key() -> None:
    variants = {
        key(),
        key(prompt="do it again"),
        key(iteration=2),
        key(upstream_digests={**UPSTREAM, "plan": "sha256:" + "3" * 64}),
        key(upstream_digests={"plan": UPSTREAM["plan"]}),
        key(changed(image="ex/coder:2")),
        key(changed(command=["go"])),
        key(changed(args=["--slow"])),
        key(changed(model="m2")),
        key(changed(env=[AGENT.env[0].model_copy(update={"value": "lax"}), AGENT.env[1]])),
    }
    assert len(variants) == 10


def test_order_of_upstream_and_env_does_not_matter_and_names_do_not_count() -> None:
    reversed_upstream = dict(reversed(list(UPSTREAM.items())))
    assert key(upstream_digests=reversed_upstream) == key()
    assert key(changed(env=list(reversed(AGENT.env)))) == key()
    assert key(changed(name="renamed")) == key()
    assert key(changed(resources={"limits": {"cpu": "2"}})) == key()


def test_a_secret_counts_by_its_reference() -> None:
    other_key = EnvVar.model_validate(
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "other"}}}
    )
    assert key(changed(env=[AGENT.env[0], other_key])) != key()


def test_resolved_agent_merges_the_override_and_defaults_the_image() -> None:
    wf = workflow(
        [
            step(
                "s",
                agent="coder",
                override={
                    "model": "m9",
                    "env": [{"name": "MODE", "value": "lax"}, {"name": "NEW", "value": "1"}],
                },
            ),
            step("t", agent="plain"),
        ],
        agents=[AGENT, AgentTemplate(name="plain")],
    )
    resolved = resolve_agent(wf.spec, wf.spec.steps[0])
    assert (resolved.image, resolved.model, resolved.args) == ("ex/coder:1", "m9", ["--fast"])
    assert [(e.name, e.value) for e in resolved.env] == [
        ("MODE", "lax"),
        ("TOKEN", None),
        ("NEW", "1"),
    ]
    plain = resolve_agent(wf.spec, wf.spec.steps[1])
    assert plain.image == "agentflow/agent-runner:0.1.0"
