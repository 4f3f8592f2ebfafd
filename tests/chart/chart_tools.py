"""Helpers for the chart tests: the tool binaries, rendering the chart, and offline JSON schemas
for kubeconform (Kubernetes from the kubernetes-validate package, prometheus-operator CRDs
converted from tests/chart/fixtures)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "agentflow"
HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
CACHE = Path(os.environ.get("AGENTFLOW_CACHE", Path.home() / ".cache" / "agentflow"))
BIN_DIR = Path(os.environ.get("AGENTFLOW_BIN_DIR", CACHE / "bin"))
SCHEMA_CACHE = CACHE / "schemas"
KUBE_VERSION = (REPO / "hack" / "controlplane" / "VERSION").read_text().strip().lstrip("v")
MONITORING_API = "monitoring.coreos.com/v1"
PROMETHEUS_OPERATOR_CRDS = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}


def tool(name: str) -> str:
    """Path of a binary from `make binaries` (which `make test` runs first); fails if absent."""
    path = shutil.which(name, path=str(BIN_DIR))
    if path is None:
        pytest.fail(f"{name} is not built: run `make binaries` (looked in {BIN_DIR})")
    return path


def run(args: Sequence[str], *, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), input=input, capture_output=True, text=True, timeout=300, check=False
    )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@functools.cache
def _render(
    values_files: tuple[str, ...], sets: tuple[str, ...], api_versions: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    args = [tool("helm"), "template", "agentflow", str(CHART)]
    args += ["--namespace", "agentflow-system", "--kube-version", KUBE_VERSION]
    for f in values_files:
        args += ["--values", f]
    for s in sets:
        args += ["--set", s]
    for a in api_versions:
        args += ["--api-versions", a]
    return run(args)


def render_result(
    values_files: Sequence[str | Path] = (),
    sets: Sequence[str] = (),
    api_versions: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart (cached per arguments); the result, whether it failed or not."""
    return _render(tuple(map(str, values_files)), tuple(sets), tuple(api_versions))


def render(
    values_files: Sequence[str | Path] = (),
    sets: Sequence[str] = (),
    api_versions: Sequence[str] = (),
) -> str:
    """The rendered manifests; fails the test when helm fails."""
    result = render_result(values_files, sets, api_versions)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(manifests: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifests) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------------------------
# Offline schemas for kubeconform
# --------------------------------------------------------------------------------------------


def _kubernetes_validate_dir() -> Path:
    """The kubernetes-validate strict schema directory closest to the control plane's version."""
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    versions: dict[tuple[int, int], Path] = {}
    for d in root.iterdir():
        m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+-local-strict", d.name)
        if m:
            versions[(int(m[1]), int(m[2]))] = d
    major, minor = (int(p) for p in KUBE_VERSION.split(".")[:2])
    best = min(versions, key=lambda v: (abs(v[0] * 100 + v[1] - major * 100 - minor), v))
    return versions[best]


def _publish(target: Path, write: Any) -> Path:
    """Build a cache directory atomically (parallel test runs may race to create it)."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    write(staging)
    try:
        staging.rename(target)
    except OSError:  # someone else published it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


@functools.cache
def kubernetes_schema_dir() -> Path:
    """kubernetes-validate's schemas, made loadable by kubeconform.

    They carry ``$id: https://kubernetes.io/...`` and reference ``/api/_definitions.json``,
    which kubeconform's loader would fetch from the network; without the ``$id`` and with a
    relative reference they resolve to the neighbouring file.
    """
    source = _kubernetes_validate_dir()
    target = SCHEMA_CACHE / f"kubernetes-{source.name}-kv{kubernetes_validate.__version__}"

    def write(out: Path) -> None:
        for f in source.glob("*.json"):
            schema = json.loads(f.read_text())
            schema.pop("$id", None)
            text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
            (out / f.name).write_text(text)

    return _publish(target, write)


def crd_to_json_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """A CRD version's openAPIV3Schema as a strict JSON schema (as kubeconform's
    openapi2jsonschema does): no unknown fields where the schema lists properties."""
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = json.loads(json.dumps(v["schema"]["openAPIV3Schema"]))
            break
    else:
        raise KeyError(f"{crd['metadata']['name']} has no version {version}")

    def strict(node: Any) -> Any:
        if isinstance(node, list):
            return [strict(n) for n in node]
        if not isinstance(node, dict):
            return node
        node = {k: strict(v) for k, v in node.items()}
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if node.pop("nullable", False) and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
        if "properties" in node and "additionalProperties" not in node and not preserve:
            node["additionalProperties"] = False
        for key in [k for k in node if k.startswith("x-kubernetes-")]:
            del node[key]
        return node

    result: dict[str, Any] = strict(schema)
    group = crd["spec"]["group"]
    result["properties"]["apiVersion"] = {"type": "string", "enum": [f"{group}/{version}"]}
    result["properties"]["kind"] = {"type": "string", "enum": [crd["spec"]["names"]["kind"]]}
    return result


@functools.cache
def monitoring_schema_dir() -> Path:
    """JSON schemas for ServiceMonitor and PrometheusRule from the committed CRDs."""
    sources = [FIXTURES / name for name in PROMETHEUS_OPERATOR_CRDS.values()]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    target = SCHEMA_CACHE / f"prometheus-operator-{digest}"

    def write(out: Path) -> None:
        for path in sources:
            crd = yaml.safe_load(path.read_text())
            kind = crd["spec"]["names"]["kind"].lower()
            group = crd["spec"]["group"].split(".")[0]
            for v in crd["spec"]["versions"]:
                schema = crd_to_json_schema(crd, v["name"])
                (out / f"{kind}-{group}-{v['name']}.json").write_text(json.dumps(schema))

    return _publish(target, write)


def kubeconform(manifests: str) -> subprocess.CompletedProcess[str]:
    """kubeconform -strict over the manifests, fully offline."""
    template = "{{.ResourceKind}}{{.KindSuffix}}.json"
    return run(
        [
            tool("kubeconform"),
            "-strict",
            "-summary",
            "-output",
            "text",
            "-schema-location",
            f"{kubernetes_schema_dir()}/{template}",
            "-schema-location",
            f"{monitoring_schema_dir()}/{template}",
            "-",
        ],
        input=manifests,
    )
