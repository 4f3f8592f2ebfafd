"""docs/benchmarks.md from the raw figures (docs/benchmarks.json); pure, so it is tested.

A hand-written part of docs/benchmarks.md between the ``ANALYSIS_BEGIN``/``ANALYSIS_END``
markers (profiles, what bounds a missed target) survives regeneration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.stats import (
    fmt,
    fmt_ms,
    fmt_ratio,
    markdown_table,
    ratio,
    split_reads_writes,
)

ANALYSIS_BEGIN = "<!-- analysis: kept when the file is regenerated -->"
ANALYSIS_END = "<!-- end of analysis -->"
# Requests the harness itself makes during a run, not either controller.
HARNESS_WRITES = ("POST/workflows", "POST/workflowtaskresults")
OPERATOR_EVENT_COMPONENT = "agentflow-operator"

TARGETS = {
    "overhead_p50": 0.050,
    "overhead_p99": 0.250,
    "writes_per_step": 3.0,
    "throughput_ratio": 1.0,
    "rss_mib": 250.0,
    "rss_ratio": 1.0,
    "loop_lag": 0.100,
}


def find(runs: Sequence[Mapping[str, Any]], peer: str, scenario: str) -> Mapping[str, Any] | None:
    return next((r for r in runs if r["peer"] == peer and r["scenario"] == scenario), None)


def cost(run: Mapping[str, Any]) -> dict[str, float | None]:
    """API requests per step of a run: the controller's own, and the cluster's writes.

    For agentflow the operator's metric counts the requests of its own client, the Events it
    posts among them; kopf's own writes are added from the API server's side: PATCHes of the
    Workflow object itself (kopf taking off the finalizer of earlier versions).
    """
    steps = run.get("steps_created") or 0
    if not steps:
        return {}
    server: Mapping[str, float] = run.get("apiserver_requests") or {}
    server_by_verb: dict[str, float] = {}
    for key, n in server.items():
        server_by_verb[key.split("/", 1)[0]] = server_by_verb.get(key.split("/", 1)[0], 0.0) + n
    server_reads, server_writes = split_reads_writes(server_by_verb)
    server_writes -= sum(server.get(key, 0.0) for key in HARNESS_WRITES)
    result: dict[str, float | None] = {
        "cluster_writes_per_step": server_writes / steps,
        "cluster_reads_per_step": server_reads / steps,
        "own_reads_per_step": None,
        "own_writes_per_step": None,
        "controller_writes_per_step": None,
    }
    own = run.get("own_requests")
    if own is not None:
        reads, writes = split_reads_writes(own)
        result["own_reads_per_step"] = reads / steps
        result["own_writes_per_step"] = writes / steps
        if run["peer"] == "agentflow":
            events = (run.get("events_by_component") or {}).get(OPERATOR_EVENT_COMPONENT, 0.0)
            object_patches = server.get("PATCH/workflows", 0.0)
            result["controller_writes_per_step"] = (writes + object_patches) / steps
            result["events_per_step"] = events / steps
        else:
            result["controller_writes_per_step"] = writes / steps
    return result


def step_overhead(run: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Per-step overhead from the step's pod seen Succeeded to the next step object seen created.

    For agentflow that is ``overhead_from_pod``: the operator acts on the pod's verdict, before
    the Job controller marks the Job Complete, so the gap from Job Complete can be negative.
    """
    if run is None:
        return {}
    if run["peer"] == "agentflow":
        return run.get("overhead_from_pod") or {}
    return run.get("overhead") or {}


def _overhead_cell(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return "-"
    return " / ".join(fmt_ms(summary.get(k)) for k in ("p50", "p95", "p99"))


def throughput_rows(runs: Sequence[Mapping[str, Any]], scenarios: Sequence[str]) -> list[list[str]]:
    rows = []
    for scenario in scenarios:
        ours = find(runs, "agentflow", scenario)
        theirs = find(runs, "argo", scenario)
        if ours is None and theirs is None:
            continue
        ref = ours or theirs
        assert ref is not None
        shape = f"{ref['workflows']} x {ref['steps_per_workflow']} steps"
        rows.append(
            [
                scenario,
                shape,
                _seconds(ours),
                fmt(ours.get("workflows_per_second") if ours else None),
                fmt(ours.get("steps_per_second") if ours else None),
                _seconds(theirs),
                fmt(theirs.get("workflows_per_second") if theirs else None),
                fmt(theirs.get("steps_per_second") if theirs else None),
                fmt_ratio(
                    ratio(
                        ours.get("steps_per_second") if ours else None,
                        theirs.get("steps_per_second") if theirs else None,
                    )
                ),
            ]
        )
    return rows


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _seconds(run: Mapping[str, Any] | None) -> str:
    if run is None:
        return "-"
    if run.get("timed_out"):
        return "timed out"
    return fmt(run.get("seconds"), " s", 1)


def overhead_rows(runs: Sequence[Mapping[str, Any]], scenarios: Sequence[str]) -> list[list[str]]:
    rows = []
    for scenario in scenarios:
        ours = find(runs, "agentflow", scenario)
        theirs = find(runs, "argo", scenario)
        if ours is None and theirs is None:
            continue
        ours_overhead = step_overhead(ours)
        theirs_overhead = step_overhead(theirs)
        rows.append(
            [
                scenario,
                _overhead_cell(ours_overhead),
                _overhead_cell((ours or {}).get("overhead")),
                _overhead_cell(theirs_overhead),
                fmt_ratio(ratio(ours_overhead.get("p50"), theirs_overhead.get("p50"))),
                fmt_ratio(ratio(ours_overhead.get("p99"), theirs_overhead.get("p99"))),
            ]
        )
    return rows


def cost_rows(runs: Sequence[Mapping[str, Any]], scenarios: Sequence[str]) -> list[list[str]]:
    rows = []
    for scenario in scenarios:
        for peer in ("agentflow", "argo"):
            run = find(runs, peer, scenario)
            if run is None:
                continue
            c = cost(run)
            rows.append(
                [
                    scenario,
                    peer,
                    fmt(c.get("own_reads_per_step")),
                    fmt(c.get("own_writes_per_step")),
                    fmt(c.get("controller_writes_per_step")),
                    fmt(c.get("cluster_writes_per_step")),
                    fmt(run.get("cpu_ms_per_step"), " ms", 1),
                    fmt(run.get("rss_mib"), " MiB", 0),
                ]
            )
    return rows


def target_rows(report: Mapping[str, Any]) -> list[list[str]]:
    runs = report["runs"]
    rows: list[list[str]] = []
    concurrent = next(
        (
            r
            for r in runs
            if r["peer"] == "agentflow"
            and r["scenario"].startswith("latency-")
            and r["scenario"] != "latency-1"
        ),
        None,
    )
    overhead = step_overhead(concurrent)
    for key, label in (("p50", "overhead_p50"), ("p99", "overhead_p99")):
        value = overhead.get(key)
        limit = TARGETS[label]
        rows.append(
            [
                f"overhead per step {key}, {concurrent['workflows'] if concurrent else '?'}"
                " concurrent workflows",
                f"<= {fmt_ms(limit)}",
                fmt_ms(value),
                _verdict(value is not None and value <= limit, value),
            ]
        )
    chains = find(runs, "agentflow", "chains")
    writes = cost(chains).get("controller_writes_per_step") if chains else None
    rows.append(
        [
            "operator API writes per step attempt (happy path, chains)",
            f"<= {TARGETS['writes_per_step']:.0f}",
            fmt(writes),
            _verdict(writes is not None and writes <= TARGETS["writes_per_step"], writes),
        ]
    )
    for scenario in ("burst", "chains", "fanout"):
        ours, theirs = find(runs, "agentflow", scenario), find(runs, "argo", scenario)
        value = ratio(
            ours.get("steps_per_second") if ours else None,
            theirs.get("steps_per_second") if theirs else None,
        )
        rows.append(
            [
                f"throughput agentflow/Argo, {scenario}",
                f">= {TARGETS['throughput_ratio']:.1f}x",
                fmt_ratio(value),
                _verdict(value is not None and value >= TARGETS["throughput_ratio"], value),
            ]
        )
    memory = find(runs, "agentflow", "memory")
    rss = memory.get("rss_mib") if memory else None
    present = memory["workflows"] if memory else "?"
    rows.append(
        [
            f"operator RSS with {present} Workflows",
            f"<= {TARGETS['rss_mib']:.0f} MiB",
            fmt(rss, " MiB", 0),
            _verdict(rss is not None and rss <= TARGETS["rss_mib"], rss),
        ]
    )
    argo_memory = find(runs, "argo", "memory")
    rss_ratio = ratio(rss, argo_memory.get("rss_mib") if argo_memory else None)
    rows.append(
        [
            f"operator RSS agentflow/Argo with {present} Workflows",
            f"<= {TARGETS['rss_ratio']:.1f}x",
            fmt_ratio(rss_ratio),
            _verdict(rss_ratio is not None and rss_ratio <= TARGETS["rss_ratio"], rss_ratio),
        ]
    )
    for key, what in (
        ("p99", "operator event-loop lag p99"),
        ("max", "operator event-loop lag max"),
        ("on_cpu_p99", "its on-CPU part (the loop's own code) p99"),
        ("on_cpu_max", "its on-CPU part (the loop's own code) max"),
    ):
        worst, lag = worst_loop_lag(runs, key)
        rows.append(
            [
                f"{what}, worst scenario" + (f" ({worst})" if worst else ""),
                f"<= {fmt_ms(TARGETS['loop_lag'])}",
                fmt_ms(lag),
                _verdict(lag is not None and lag <= TARGETS["loop_lag"], lag),
            ]
        )
    return rows


def worst_loop_lag(runs: Sequence[Mapping[str, Any]], key: str) -> tuple[str | None, float | None]:
    """The agentflow run with the largest event-loop lag ``key`` (p99, max, on_cpu_p99 or
    on_cpu_max), and that lag."""
    worst: tuple[str | None, float | None] = (None, None)
    for run in runs:
        value = (run.get("loop_lag") or {}).get(key) if run["peer"] == "agentflow" else None
        if value is not None and (worst[1] is None or value > worst[1]):
            worst = (run["scenario"], value)
    return worst


def _distribution_cell(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return "-"
    return " / ".join(fmt_ms(summary.get(k)) for k in ("p50", "p95", "max"))


def first_job_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Per scenario: workflow seen created -> its first Job (agentflow) or pod (Argo) seen."""
    rows = []
    for scenario in _unique([r["scenario"] for r in runs]):
        ours, theirs = find(runs, "agentflow", scenario), find(runs, "argo", scenario)
        summaries = [(r or {}).get("first_step") for r in (ours, theirs)]
        if not any(summaries):
            continue
        rows.append([scenario, *(_distribution_cell(s) for s in summaries)])
    return rows


def responsiveness_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Per scenario and peer: /healthz answers during the run, and the event loop's lag."""
    rows = []
    for run in runs:
        health = run.get("healthz")
        lag = run.get("loop_lag")
        if not health and not lag:
            continue
        health = health or {}
        lag = lag or {}
        rows.append(
            [
                run["scenario"],
                run["peer"],
                fmt(health.get("samples")),
                fmt(health.get("non_200")),
                fmt_ms(health.get("slowest_seconds")),
                fmt_ms(lag.get("p50")),
                fmt_ms(lag.get("p99")),
                fmt_ms(lag.get("max")),
                fmt_ms(lag.get("on_cpu_p99")),
                fmt_ms(lag.get("on_cpu_max")),
                _full_collections_cell(lag),
            ]
        )
    return rows


def _full_collections_cell(lag: Mapping[str, Any]) -> str:
    """How many full garbage collections a run saw, and the bucket bound of the longest."""
    count = lag.get("gc_full_collections")
    if count is None:
        return "-"
    longest = lag.get("gc_full_longest_at_most")
    return f"{count:,.0f}" + (f" (<= {fmt_ms(longest)})" if longest is not None else "")


def memory_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for peer in ("agentflow", "argo"):
        run = find(runs, peer, "memory")
        if run is None:
            continue
        health = run.get("healthz") or {}
        rows.append(
            [
                peer,
                fmt(run.get("workflows")),
                fmt(run.get("rss_before_mib"), " MiB", 0),
                fmt(run.get("rss_mib"), " MiB", 0),
                fmt(run.get("kib_per_workflow"), " KiB", 0),
                _seconds(run),
                fmt(run.get("idle_cpu_percent"), "%", 1),
                fmt(health.get("non_200")),
            ]
        )
    return rows


def scaling_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for peer in ("agentflow", "argo"):
        run = find(runs, peer, "memory")
        for point in (run or {}).get("scaling") or []:
            rows.append(
                [
                    peer,
                    fmt(point.get("workflows")),
                    fmt(point.get("cpu_percent"), "%", 1),
                    fmt(point.get("cpu_seconds_total"), " s", 1),
                    fmt(point.get("rss_mib"), " MiB", 0),
                    fmt(point.get("own_requests_per_second")),
                    fmt(point.get("cluster_requests_per_second")),
                ]
            )
    return rows


def _verdict(met: bool, value: Any) -> str:
    if value is None:
        return "not measured"
    return "met" if met else "missed"


def keep_analysis(previous: str | None) -> str:
    """The hand-written analysis of an earlier docs/benchmarks.md, markers included."""
    if previous and ANALYSIS_BEGIN in previous and ANALYSIS_END in previous:
        start = previous.index(ANALYSIS_BEGIN)
        end = previous.index(ANALYSIS_END) + len(ANALYSIS_END)
        return previous[start:end]
    return f"{ANALYSIS_BEGIN}\n\n(no analysis written yet)\n\n{ANALYSIS_END}"


def render(report: Mapping[str, Any], previous: str | None = None) -> str:
    runs: list[Mapping[str, Any]] = report["runs"]
    machine, versions, settings = report["machine"], report["versions"], report["settings"]
    quick = " with `--quick` (every scenario about 10x smaller)" if report.get("quick") else ""
    out = [
        "# Benchmarks: agentflow and Argo Workflows side by side",
        "",
        f"Measured by `make bench` (`python -m bench`) on {report['date']}{quick}, both "
        "controllers in the same invocation, on the same local cluster, one after the other. "
        "Raw figures: [benchmarks.json](benchmarks.json). How it is measured: see the end.",
        "",
        markdown_table(
            ["machine", ""],
            [
                ["CPU", f"{machine['cpu_model']} ({machine['nproc']} cores)"],
                ["memory", f"{machine['memory_gib']:.0f} GiB"],
                ["OS", machine["os"]],
                ["Python", versions["python"]],
                ["kopf", versions["kopf"]],
                ["Kubernetes (local control plane)", versions["kubernetes"]],
                ["agentflow", versions["agentflow"]],
                ["Argo Workflows (workflow-controller)", versions.get("argo") or "not run"],
                [
                    "client rate limits",
                    f"agentflow qps {settings['agentflow']['qps']:g}/burst "
                    f"{settings['agentflow']['burst']}; Argo qps {settings['argo']['qps']:g}/"
                    f"burst {settings['argo']['burst']} (each one's default); Argo's "
                    f"DEFAULT_REQUEUE_TIME {settings['argo'].get('requeue') or 'default'} "
                    "(its default is 10s)",
                ],
                ["wall time of the whole run", fmt(report.get("duration_seconds"), " s", 0)],
            ],
        ),
        "",
    ]
    if report.get("argo_error"):
        out += [
            "**Argo Workflows could not be run**; what failed:",
            "",
            "```",
            str(report["argo_error"]).strip(),
            "```",
            "",
        ]
    out += [
        "## Targets",
        "",
        markdown_table(["target", "limit", "measured", ""], target_rows(report)),
        "",
        "## Throughput",
        "",
        "Workflows submitted at once; time from the first submission until the last workflow "
        "was seen Succeeded. Ratio: agentflow steps/s ÷ Argo steps/s (higher is better for "
        "agentflow). Argo runs with `DEFAULT_REQUEUE_TIME` lowered to "
        f"{settings['argo'].get('requeue', '?')} except in `chains-small`, where it has its own "
        "default of 10 s (a step transition then waits up to 10 s for the workflow's requeue).",
        "",
        markdown_table(
            [
                "scenario",
                "shape",
                "agentflow",
                "wf/s",
                "steps/s",
                "Argo",
                "wf/s",
                "steps/s",
                "ratio",
            ],
            throughput_rows(runs, ["burst", "chains", "fanout", "chains-small"]),
        ),
        "",
        "## Overhead per step (p50 / p95 / p99)",
        "",
        "Sequential 10-step workflows; n concurrent workflows in `latency-n`, 50 in `chains`. "
        "For both: a step's pod seen Succeeded → the next step's Job (agentflow) or pod (Argo) "
        "seen created. The operator acts on the pod's verdict, before the Kubernetes Job "
        "controller marks the Job Complete about a second later, so the gap measured from Job "
        "Complete (second column) is negative. Ratios: agentflow ÷ Argo (lower is better for "
        "agentflow).",
        "",
        markdown_table(
            [
                "scenario",
                "agentflow",
                "agentflow from Job Complete",
                "Argo",
                "p50 ratio",
                "p99 ratio",
            ],
            overhead_rows(
                runs,
                [*_unique([r["scenario"] for r in runs if "latency" in r["scenario"]]), "chains"],
            ),
        ),
        "",
    ]
    hist_rows = [
        [r["scenario"], *(fmt_ms(r["overhead_histogram"].get(k)) for k in ("p50", "p95", "p99"))]
        for r in runs
        if r["peer"] == "agentflow" and r.get("overhead_histogram", {}).get("n")
    ]
    if hist_rows:
        out += [
            "Cross-check: the operator's own histogram `agentflow_operator_step_overhead_seconds` "
            "(bucketed, and its start is the pod's `finishedAt`, which has one-second "
            "resolution):",
            "",
            markdown_table(["scenario", "p50", "p95", "p99"], hist_rows),
            "",
        ]
    out += [
        "## Cost per step",
        "",
        "API requests per step (per Job for agentflow, per pod for Argo). *own*: counted by the "
        "controller itself (`agentflow_kubernetes_api_requests_total`; Argo's "
        "`argo_workflows_k8s_request_total`). *controller writes*: for agentflow the own writes "
        "(the Events it posts among them) plus what kopf writes outside that client (PATCHes of "
        "the Workflow object, taking off the finalizer of earlier versions); for Argo its own "
        "count, which covers all its clients. *cluster writes*: the API server's "
        "`apiserver_request_total` delta over the run, every client (Job "
        "controller, node, garbage collector) included, less the harness's own submissions and "
        "the stand-in executor's task results. CPU: the controller process, utime+stime.",
        "",
        markdown_table(
            [
                "scenario",
                "peer",
                "own reads",
                "own writes",
                "controller writes",
                "cluster writes",
                "CPU per step",
                "RSS after",
            ],
            cost_rows(runs, ["burst", "chains", "fanout"]),
        ),
        "",
    ]
    cold, warm = find(runs, "agentflow", "cache-cold"), find(runs, "agentflow", "cache-warm")
    if cold and warm:
        out += [
            "## Caching",
            "",
            "The same workflow run twice; the second one has identical steps, so every step "
            "should come from the result cache without a Job.",
            "",
            markdown_table(
                ["run", "steps", "time to Succeeded", "Jobs created"],
                [
                    [
                        label,
                        str(r["steps_per_workflow"]),
                        _seconds(r),
                        str(r.get("steps_created", 0)),
                    ]
                    for label, r in (("cold", cold), ("warm (cache hits)", warm))
                ],
            ),
            "",
        ]
    first_rows = first_job_rows(runs)
    if first_rows:
        out += [
            "## Time to first Job (p50 / p95 / max)",
            "",
            "From a Workflow seen created to its first Job (agentflow) or pod (Argo) seen "
            "created, both from the harness's watches; for a burst this is how long the last "
            "Workflows of the burst wait for the controller to start them.",
            "",
            markdown_table(["scenario", "agentflow", "Argo"], first_rows),
            "",
        ]
    health_rows = responsiveness_rows(runs)
    if health_rows:
        out += [
            "## Responsiveness during the runs",
            "",
            "`/healthz` asked once a second by the harness during each run (agentflow: the "
            "operator's metrics port; Argo: the controller's port 6060), with how many answers "
            "were not 200 (no answer within 5 s counts) and the slowest answer. Event-loop lag: "
            "`agentflow_operator_event_loop_lag_seconds` over the run (p50, p99 from its "
            "buckets) and the largest value of `agentflow_operator_event_loop_lag_max_seconds` "
            "(the last 10 s's maximum) scraped every 5 s: how much later than asked the "
            "operator's one event loop woke a 50 ms sleep. *On CPU*: the part of each lag the "
            "loop's thread can have spent running code (at most its CPU time over the sleep, "
            "`agentflow_operator_event_loop_lag_on_cpu_seconds` and its `_max` gauge); the rest "
            "of the lag the process waited for one of the machine's 2 cores. *Full GCs*: the "
            "garbage collector's full collections during the run "
            '(`agentflow_operator_gc_pause_seconds{generation="2"}`) and the bucket of the '
            "longest. Argo has no such figures.",
            "",
            markdown_table(
                [
                    "scenario",
                    "peer",
                    "/healthz samples",
                    "not 200",
                    "slowest",
                    "loop lag p50",
                    "p99",
                    "max",
                    "on CPU p99",
                    "on CPU max",
                    "full GCs",
                ],
                health_rows,
            ),
            "",
        ]
    mem_rows = memory_rows(runs)
    if mem_rows:
        out += [
            "## Memory",
            "",
            "Single-step Workflows created in batches and left in place (finished), each "
            "controller alone on the machine and started afresh for it. RSS after: 10 s after "
            "the last Workflow finished; per finished Workflow: (after - before) / Workflows; "
            "idle CPU: the 20 s after that.",
            "",
            markdown_table(
                [
                    "peer",
                    "Workflows",
                    "RSS before",
                    "RSS after",
                    "per finished Workflow",
                    "time to run them all",
                    "idle CPU (of a core)",
                    "/healthz not 200",
                ],
                mem_rows,
            ),
            "",
        ]
    scale_rows = scaling_rows(runs)
    if scale_rows:
        out += [
            "## Scaling",
            "",
            "The controller at rest with n Workflows present, measured on the way up of the "
            "memory scenario's batches (3 s to settle, then a window of "
            f"{report.get('sizes', {}).get('scaling_window', '?')} s; the last row is the "
            "memory figure's 20 s window). Every Workflow present is finished: the local node "
            "in instant mode finishes a pod as soon as it is bound, so no step keeps running "
            'and a "running" share is not measured. CPU: % of a core over the window, and '
            "seconds used since the scenario started. Own requests/s: the controller's own "
            "count (for agentflow without kopf's watches); cluster: every client of the API "
            "server, the harness's watches included.",
            "",
            markdown_table(
                [
                    "peer",
                    "Workflows present",
                    "CPU",
                    "CPU since start",
                    "RSS",
                    "own requests/s",
                    "cluster requests/s",
                ],
                scale_rows,
            ),
            "",
        ]
    notes = [
        f"- {r['peer']} {r['scenario']}: {'; '.join(r['notes'])}" for r in runs if r.get("notes")
    ]
    if notes:
        out += ["Notes from the runs:", "", *notes, ""]
    out += [
        "## Analysis",
        "",
        keep_analysis(previous),
        "",
        "## How it is measured",
        "",
        "- `python -m bench` starts its own cluster in `.agentflow/bench-cluster` (etcd, "
        "kube-apiserver, kube-controller-manager and the project's local node in instant mode: "
        "a pod is marked finished as soon as it is bound, so the figures measure the "
        "controllers, not agents), installs both projects' CRDs, and runs each controller as a "
        "separate process watching only its own namespace.",
        "- Both peers run the same shapes: single-container steps, a chain (`Sequential` / Argo "
        "`steps` with one step per group) or a fan-out (`Parallel` / one group of steps) with "
        "workflow-level `parallelism`. agentflow's result cache is off except in the caching "
        "scenario (Argo has no cache unless `memoize` is set).",
        "- Argo's pods run nothing, so its executor never reports: a helper in the harness "
        "creates each pod's `WorkflowTaskResult` (labelled `report-outputs-completed=true`) as "
        "soon as the pod appears — one request where the real executor makes three, so Argo "
        "never waits for it.",
        "- Times are local receive times of watch events held by the harness (not "
        "`creationTimestamp`, which has one-second resolution). Between scenarios every "
        "workflow is deleted and the run waits until its Jobs/pods are gone.",
        "- During every run the harness asks the controller's `/healthz` once a second and, "
        "for agentflow, scrapes `/metrics` every 5 s for the event-loop lag gauge; the lag's "
        "p50 and p99 are the delta of `agentflow_operator_event_loop_lag_seconds` between "
        "the scrapes before and after the run.",
        "- The memory scenario (which also measures the scaling curve) runs last, for each "
        "peer alone and from a freshly started controller: agentflow first (then its "
        "Workflows are deleted and it is stopped), then Argo. `--quick` runs 500 Workflows "
        "with scaling points at 10, 100 and 500.",
        "- The machine is shared (2 cores) and the harness, the API server and etcd run on it "
        "too, so absolute figures are pessimistic; ratios come from the same invocation.",
        "",
    ]
    return "\n".join(out)
