"""``python -m agentflow_devcluster up|down|status``: the local cluster from the shell.

``up`` starts (or reuses) the control plane and then the local node, and prints the kubeconfig;
``down`` stops the node, the controller manager, the apiserver and etcd; ``status`` prints what is
running and exits 1 when the control plane is not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from agentflow_devcluster.controlplane import (
    NODE_NAME,
    LocalCluster,
    LocalClusterError,
    default_state_dir,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agentflow_devcluster",
        description="Run a local Kubernetes control plane and node on 127.0.0.1.",
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where certificates, data, logs and pids live"
        " (default: $AGENTFLOW_STATE_DIR or <repo>/.agentflow/cluster)",
    )
    parser.add_argument("--bin-dir", type=Path, default=None, help="default: $AGENTFLOW_BIN_DIR")
    parser.add_argument("--no-node", action="store_true", help="up: control plane only")
    parser.add_argument("--instant", action="store_true", help="up: start the node in instant mode")
    parser.add_argument("--timeout", type=float, default=120.0, help="up: seconds to wait")
    parser.add_argument("--json", action="store_true", help="status: print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cluster = LocalCluster(args.state_dir or default_state_dir(), args.bin_dir)
    try:
        if args.command == "up":
            began = time.monotonic()
            cluster.start(timeout=args.timeout)
            print(f"control plane ready at {cluster.api_url} ({time.monotonic() - began:.1f}s)")
            if not args.no_node:
                cluster.start_node(instant=args.instant)
                print(f"node {NODE_NAME} ready")
            print(f"kubeconfig: {cluster.kubeconfig}")
            print(f"export KUBECONFIG={cluster.kubeconfig}")
            return 0
        if args.command == "down":
            cluster.stop()
            print(f"stopped the cluster in {cluster.state_dir}")
            return 0
        status = cluster.status()
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            _print_status(status)
        return 0 if status["running"] else 1
    except LocalClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _print_status(status: dict[str, object]) -> None:
    print(f"state dir:  {status['state_dir']}")
    print(f"kubeconfig: {status['kubeconfig']}")
    print(f"running:    {status['running']}")
    components = status["components"]
    assert isinstance(components, dict)
    for name, entry in components.items():
        pid = entry["pid"] if entry["pid"] is not None else "-"
        state = "alive" if entry["alive"] else "stopped"
        url = entry.get("url", "")
        print(f"  {name:<24} {state:<8} pid {pid!s:<8} {url}")
        print(f"  {'':<24} log {entry['log']}")


if __name__ == "__main__":
    sys.exit(main())
