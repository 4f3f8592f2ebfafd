"""``python -m bench [--scenarios a,b] [--quick] [--no-argo]``: see docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report, scenarios
from bench.cluster import REPO, STATE_DIR, BenchCluster
from bench.peers import AgentflowPeer, ArgoPeer, Peer, argo_module_dir, build_argo
from bench.scenarios import Run, Sizes

log = logging.getLogger("bench")

# "scaling" is measured on the way up of the memory scenario's Workflows (one run for both).
ALL_SCENARIOS = ("burst", "chains", "fanout", "latency", "cache", "memory", "scaling")
AF_NAMESPACE = "bench-agentflow"
ARGO_NAMESPACE = "bench-argo"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark agentflow's operator against Argo Workflows on a local cluster.",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help=f"comma-separated subset of {','.join(ALL_SCENARIOS)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="every scenario about 10x smaller")
    parser.add_argument("--no-argo", action="store_true", help="run agentflow only")
    parser.add_argument(
        "--qps", type=float, default=None, help="agentflow's client QPS (default: its own 50)"
    )
    parser.add_argument(
        "--burst", type=int, default=None, help="agentflow's client burst (default: its own 100)"
    )
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for agentflow's operator (repeatable)",
    )
    parser.add_argument("--argo-qps", type=float, default=20.0, help="Argo's --qps (default 20)")
    parser.add_argument("--argo-burst", type=int, default=30, help="Argo's --burst (default 30)")
    parser.add_argument(
        "--argo-requeue",
        default="1s",
        help="Argo's DEFAULT_REQUEUE_TIME (its own default is 10s, which holds every step "
        "transition for 10 s); 'default' leaves it unset (default: 1s)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the operator with py-spy during the throughput scenarios",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs", help="where benchmarks.json/.md go"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=25.0, help="stop starting scenarios after this"
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(ALL_SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    args.chosen = [s for s in ALL_SCENARIOS if s in chosen]
    return args


def machine() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": memory_kib / 1024 / 1024,
        "os": f"{platform.system()} {platform.release()}",
    }


def versions(bench: BenchCluster, argo: str | None) -> dict[str, Any]:
    from importlib.metadata import version

    from agentflow import __version__

    try:
        server = bench.api.call("GET", "/version").get("gitVersion", "?")
    except Exception:
        server = "?"
    return {
        "python": platform.python_version(),
        "kopf": version("kopf"),
        "kubernetes": server,
        "kubernetes_python_client": version("kubernetes"),
        "agentflow": __version__,
        "argo": argo,
    }


class Profiler:
    """py-spy sampling the operator while a scenario runs (``--profile``)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.process = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "50",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log.info("profile written to %s", self.out)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    signal.signal(signal.SIGTERM, _interrupt)
    sizes = Sizes.quick() if args.quick else Sizes()
    began = time.monotonic()
    deadline = began + args.max_minutes * 60
    logs = STATE_DIR / "logs-bench"
    bench = BenchCluster()
    peers: list[Peer] = []
    runs: list[Run] = []
    argo_error: str | None = None
    argo_version: str | None = None
    argo_binary: Path | None = None
    if not args.no_argo:
        try:
            log.info("building (or finding) Argo Workflows' workflow-controller")
            argo_binary, argo_version = build_argo()
        except Exception as e:
            argo_error = f"building workflow-controller failed: {e}"
            log.error("%s", argo_error)
    af_env = dict(item.split("=", 1) for item in args.operator_env)
    if args.qps is not None:
        af_env["AGENTFLOW_API_QPS"] = str(args.qps)
    if args.burst is not None:
        af_env["AGENTFLOW_API_BURST"] = str(args.burst)
    try:
        bench.up()
        shutil.rmtree(logs, ignore_errors=True)
        ours = AgentflowPeer(bench, AF_NAMESPACE, logs)
        ours.install()
        ours.start(af_env)
        peers.append(ours)
        if argo_binary is not None and argo_version is not None:
            try:
                theirs = ArgoPeer(bench, ARGO_NAMESPACE, logs, argo_binary, argo_version)
                theirs.install(argo_module_dir(argo_version))
                theirs.start(qps=args.argo_qps, burst=args.argo_burst, requeue=argo_requeue(args))
                peers.append(theirs)
            except Exception as e:
                argo_error = f"starting workflow-controller failed: {e}"
                log.error("%s", argo_error)
        runs = run_all(bench, peers, args, sizes, deadline)
        for peer in peers:
            if peer.process is not None and not peer.alive():
                log.error("%s's controller died during the run", peer.name)
        document = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": args.quick,
            "duration_seconds": time.monotonic() - began,
            "machine": machine(),
            "versions": versions(
                bench, argo_version if any(p.name == "argo" for p in peers) else None
            ),
            "settings": {
                "agentflow": {
                    "qps": args.qps if args.qps is not None else 50.0,
                    "burst": args.burst if args.burst is not None else 100,
                },
                "argo": {
                    "qps": args.argo_qps,
                    "burst": args.argo_burst,
                    "workers": 32,
                    "requeue": args.argo_requeue,
                },
            },
            "sizes": asdict(sizes),
            "argo_error": argo_error,
            "runs": [asdict(r) for r in runs],
        }
        write(args.out, document)
    except KeyboardInterrupt:
        log.error("interrupted; cleaning up")
        return 130
    finally:
        for peer in peers:
            peer.stop()
        bench.down()
        log.info("cluster stopped")
    return 0


def run_all(
    bench: BenchCluster,
    peers: list[Peer],
    args: argparse.Namespace,
    sizes: Sizes,
    deadline: float,
) -> list[Run]:
    runs: list[Run] = []
    ours = next(p for p in peers if isinstance(p, AgentflowPeer))
    plan: list[tuple[str, Callable[[BenchCluster, Peer, Sizes, float], Run], float]] = [
        ("burst", scenarios.throughput_burst, 600.0),
        ("chains", scenarios.throughput_chains, 600.0),
        ("fanout", scenarios.throughput_fanout, 400.0),
        ("latency", scenarios.latency_serial, 300.0),
        ("latency", scenarios.latency_concurrent, 300.0),
    ]
    for name, scenario, timeout in plan:
        if name not in args.chosen:
            continue
        for peer in peers:
            if time.monotonic() > deadline:
                log.warning("time budget used up: skipping %s on %s", name, peer.name)
                continue
            log.info("scenario %s on %s", name, peer.name)
            profiler = None
            if args.profile and peer is ours and name in ("burst", "chains", "fanout"):
                profiler = Profiler(peer.pid, STATE_DIR / f"profile-{name}.txt")
            try:
                runs.append(scenario(bench, peer, sizes, timeout))
            finally:
                if profiler is not None:
                    profiler.stop()
            peer.clean()
    argo = next((p for p in peers if isinstance(p, ArgoPeer)), None)
    if (
        "chains" in args.chosen
        and argo is not None
        and argo.requeue
        and time.monotonic() < deadline
    ):
        # The same comparison on a small chain with Argo's own DEFAULT_REQUEUE_TIME (10 s).
        small = Sizes.quick()
        log.info("scenario chains-small on agentflow, and on Argo with its default requeue")
        runs.append(rename(scenarios.throughput_chains(bench, ours, small, 300.0), "chains-small"))
        ours.clean()
        argo.stop()
        argo.start(qps=args.argo_qps, burst=args.argo_burst, requeue=None)
        run = rename(scenarios.throughput_chains(bench, argo, small, 400.0), "chains-small")
        run.notes.append("Argo with its default DEFAULT_REQUEUE_TIME (10 s)")
        runs.append(run)
        argo.clean()
    if "cache" in args.chosen and time.monotonic() < deadline:
        log.info("scenario cache on agentflow")
        runs.extend(scenarios.caching(bench, ours, sizes, 300.0))
        ours.clean()
    if {"memory", "scaling"} & set(args.chosen) and time.monotonic() < deadline:
        points = sizes.scaling_points if "scaling" in args.chosen else ()
        # Each peer alone on the cores, and each from a fresh process, so that RSS before
        # and after compare like with like.
        for peer in peers:
            if peer is not ours:
                peer.stop()
        ours.stop()
        ours.start(ours.env)
        log.info("scenario memory on agentflow (%d workflows)", sizes.rss_workflows)
        runs.append(scenarios.memory(bench, ours, sizes, 900.0, points))
        if argo is not None and time.monotonic() < deadline:
            ours.clean(timeout=600.0)
            ours.stop()
            argo.start(qps=args.argo_qps, burst=args.argo_burst, requeue=argo_requeue(args))
            log.info("scenario memory on argo (%d workflows)", sizes.rss_workflows)
            runs.append(scenarios.memory(bench, argo, sizes, 1500.0, points))
        elif argo is not None:
            log.warning("time budget used up: skipping memory on argo")
    return runs


def argo_requeue(args: argparse.Namespace) -> str | None:
    return None if args.argo_requeue == "default" else str(args.argo_requeue)


def rename(run: Run, scenario: str) -> Run:
    run.scenario = scenario
    return run


def write(out: Path, document: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    md = out / "benchmarks.md"
    previous = md.read_text() if md.exists() else None
    md.write_text(report.render(document, previous))
    log.info("wrote %s and %s", out / "benchmarks.json", md)


if __name__ == "__main__":
    sys.exit(main())
