"""The result cache as the plan uses it: hits, expiry, keys that follow their inputs."""

from __future__ import annotations

from datetime import timedelta

from agentflow.api.models import Step, StepPhase, StepResult
from agentflow.engine.types import CacheEntry, WriteCache
from tests.support.world import World, creates, events, kinds, step, workflow


def _chain(review_prompt: str = "review the build") -> list[Step]:
    return [
        step("plan", prompt="make a plan"),
        step("build", prompt="build: {{ steps.plan.summary }}"),
        step("review", prompt=review_prompt),
    ]


def _run_to_end(w: World) -> None:
    for _ in range(20):
        w.plan()
        if w.phase in ("Succeeded", "Failed"):
            return
        for job in w.active():
            w.succeed(job.step, f"{job.step} result")
    raise AssertionError("workflow did not finish")


def test_success_writes_the_cache_and_records_the_key() -> None:
    w = World(workflow([step("only", cache={"ttlSeconds": 600})]))
    p = w.plan()
    key = creates(p)[0].cache_key
    assert key is not None and key.startswith("sha256:")
    assert [(o.step, o.key, o.result) for o in p.cache_outcomes] == [("only", key, "miss")]
    assert w.step_status("only").cache_key == key
    w.succeed("only", "fresh result")
    p = w.plan()
    [write] = kinds(p.actions, WriteCache)
    assert (write.key, write.step, write.ttl_seconds) == (key, "only", 600)
    assert write.result.summary == "fresh result"


def test_a_fresh_hit_makes_the_step_cached_without_a_job() -> None:
    first = World(workflow(_chain(), name="first"))
    _run_to_end(first)
    second = World(workflow(_chain(), name="second"), cache=dict(first.cache), now=first.now)
    p = second.plan()
    assert creates(p) == []
    assert second.phase == "Succeeded"
    assert set(second.phases().values()) == {"Cached"}
    assert [o.result for o in p.cache_outcomes] == ["hit", "hit", "hit"]
    assert len(events(p, "CacheHit")) == 3
    build = second.step_status("build")
    assert build.result == first.step_status("build").result
    assert second.wf.status is not None
    assert second.wf.status.message == "Steps: 3 (Cached 3)"


def test_changing_a_prompt_reruns_that_step_and_its_dependents_only() -> None:
    first = World(workflow(_chain(), name="first"))
    _run_to_end(first)
    changed = [*_chain("review the build carefully"), step("ship", prompt="ship it")]
    w = World(workflow(changed), cache=dict(first.cache), now=first.now)
    p = w.plan()
    assert [c.step for c in creates(p)] == ["review"]
    assert w.phases() == {
        "plan": "Cached",
        "build": "Cached",
        "review": "Running",
        "ship": "Pending",
    }


def test_an_upstream_result_change_changes_the_downstream_key() -> None:
    keys = []
    for summary in ("plan v1", "plan v2"):
        w = World(workflow([step("plan"), step("build", prompt="build it")]))
        w.plan()
        w.succeed("plan", summary)
        p = w.plan()
        keys.append(creates(p)[0].cache_key)
    assert keys[0] != keys[1]  # same prompt, different upstream digest


def test_an_expired_entry_is_reported_and_the_step_runs() -> None:
    w = World(workflow([step("only")]))
    p = w.plan()
    key = creates(p)[0].cache_key
    assert key is not None
    later = World(
        workflow([step("only")]),
        cache={
            key: CacheEntry(
                key=key,
                result=StepResult(summary="old"),
                created_at=w.now - timedelta(days=2),
                expires_at=w.now - timedelta(seconds=1),
            )
        },
        now=w.now,
    )
    p = later.plan()
    assert [c.step for c in creates(p)] == ["only"]
    assert [o.result for o in p.cache_outcomes] == ["expired"]


def test_disabled_cache_neither_reads_nor_writes() -> None:
    w = World(workflow([step("only", cache={"enabled": False})]))
    p = w.plan()
    assert creates(p)[0].cache_key is None
    assert p.cache_outcomes == []
    w.succeed("only")
    p = w.plan()
    assert kinds(p.actions, WriteCache) == []
    assert w.step_status("only").phase is StepPhase.SUCCEEDED


def test_each_iteration_of_a_repeat_has_its_own_key() -> None:
    loop = step("loop", repeat={"until": "result.iteration == 2"})
    w = World(workflow([loop]))
    p = w.plan()
    first_key = creates(p)[0].cache_key
    w.succeed("loop")
    p = w.plan()
    second_key = creates(p)[0].cache_key
    assert first_key != second_key
    w.succeed("loop")
    w.plan()
    # Run again from the cache: both iterations hit, in one pass.
    again = World(workflow([loop], name="again"), cache=dict(w.cache), now=w.now)
    p = again.plan()
    assert creates(p) == []
    assert [o.result for o in p.cache_outcomes] == ["hit", "hit"]
    assert again.step_status("loop").phase is StepPhase.CACHED
    assert again.step_status("loop").iteration == 2
