"""CRD generation: the committed files are current, schemas are structural, rewrites work."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentflow.api import crdgen
from agentflow.api.crdgen import (
    ALLOWED_SCHEMA_KEYS,
    KINDS,
    CrdJsonSchema,
    StructuralSchemaError,
    custom_resource_definition,
    generated_files,
    openapi_schema,
    structural,
)
from agentflow.api.models import (
    MAX_WORKFLOW_NAME_LENGTH,
    WORKFLOW_NAME_MESSAGE,
    Workflow,
    WorkflowSpec,
)

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "crds"
CHART = REPO / "charts" / "agentflow" / "crds"
DOCS = REPO / "docs" / "api.md"
CRDS = {info.kind: custom_resource_definition(info) for info in KINDS}


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return structural(model.model_json_schema(by_alias=True, schema_generator=CrdJsonSchema))


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path, the root first."""
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from nodes(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}[*]")


def committed_schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    for directory in (OUT, CHART):
        for path in sorted(directory.glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            for version in crd["spec"]["versions"]:
                yield f"{path.relative_to(REPO)}", version["schema"]["openAPIV3Schema"]


# --------------------------------------------------------------------------------------------
# The committed files
# --------------------------------------------------------------------------------------------


def test_committed_files_match_the_models() -> None:
    files = generated_files(OUT, CHART, DOCS)
    assert set(files) == {
        OUT / "agentflow.dev_workflows.yaml",
        OUT / "agentflow.dev_agentfallbackpolicies.yaml",
        CHART / "agentflow.dev_workflows.yaml",
        CHART / "agentflow.dev_agentfallbackpolicies.yaml",
        DOCS,
    }
    changes = crdgen.differences(files)
    assert not changes, "generated files are out of date, run `make crds`:\n" + "\n".join(changes)


def test_chart_copy_is_identical_to_crds() -> None:
    for path in OUT.glob("*.yaml"):
        assert (CHART / path.name).read_text() == path.read_text(), "run `make crds`"


@pytest.mark.parametrize(("where", "schema"), list(committed_schemas()))
def test_committed_schema_has_no_json_schema_only_constructs(
    where: str, schema: dict[str, Any]
) -> None:
    for path, node in nodes(schema):
        at = f"{where}: {path or '<root>'}"
        assert not {"$ref", "$defs", "anyOf", "oneOf", "allOf", "const", "title"} & set(node), at
        assert "uniqueItems" not in node, at
        assert node.get("additionalProperties") is not False, at
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, True), bool), f"{at}: numeric {bound}"
        assert set(node) <= ALLOWED_SCHEMA_KEYS, f"{at}: {set(node) - ALLOWED_SCHEMA_KEYS}"


@pytest.mark.parametrize(("where", "schema"), list(committed_schemas()))
def test_committed_schema_is_structural(where: str, schema: dict[str, Any]) -> None:
    for path, node in nodes(schema):
        at = f"{where}: {path or '<root>'}"
        assert (
            node.get("type")
            or node.get("x-kubernetes-preserve-unknown-fields")
            or node.get("x-kubernetes-int-or-string")
        ), f"{at}: no type"
        assert not ("properties" in node and "additionalProperties" in node), at
        if node.get("type") == "object" and path != ".metadata":
            assert "properties" in node or "additionalProperties" in node, f"{at}: empty object"
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []) or "default" in item["properties"][key], at
        if node.get("x-kubernetes-list-type") == "set":
            assert node["items"]["type"] in ("string", "integer", "number", "boolean"), at
        if "default" in node:
            # The API server rejects a CRD whose defaults do not validate.
            jsonschema.Draft4Validator(node).validate(node["default"])
    assert schema["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize("kind", list(CRDS))
def test_crd_is_a_valid_apiextensions_v1_object(kind: str) -> None:
    kubernetes_validate.validate(CRDS[kind], "1.35.0", strict=True)


# --------------------------------------------------------------------------------------------
# CRD details
# --------------------------------------------------------------------------------------------


def test_workflow_crd_names_and_columns() -> None:
    crd = CRDS["Workflow"]
    assert crd["metadata"]["name"] == "workflows.agentflow.dev"
    spec = crd["spec"]
    assert spec["group"] == "agentflow.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "Workflow",
        "listKind": "WorkflowList",
        "plural": "workflows",
        "singular": "workflow",
        "shortNames": ["awf"],
        "categories": ["agentflow", "all"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [
        (c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
        for c in version["additionalPrinterColumns"]
    ]
    assert columns == [
        ("Phase", "string", ".status.phase", 0),
        ("Progress", "string", ".status.progress", 0),
        ("Degraded", "boolean", ".status.degraded", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("Message", "string", ".status.message", 1),
        ("Tokens", "integer", ".status.usage.totalTokens", 1),
        ("Cost", "string", ".status.usage.cost", 1),
    ]


def test_agent_fallback_policy_crd_names_and_columns() -> None:
    crd = CRDS["AgentFallbackPolicy"]
    assert crd["metadata"]["name"] == "agentfallbackpolicies.agentflow.dev"
    names = crd["spec"]["names"]
    assert (names["plural"], names["singular"]) == ("agentfallbackpolicies", "agentfallbackpolicy")
    assert names["shortNames"] == ["afp"]
    assert names["categories"] == ["agentflow"]
    [version] = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    assert [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]] == [
        ("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        ("Age", ".metadata.creationTimestamp"),
    ]


def test_every_printer_column_points_into_the_schema() -> None:
    for crd in CRDS.values():
        [version] = crd["spec"]["versions"]
        schema = version["schema"]["openAPIV3Schema"]
        for column in version["additionalPrinterColumns"]:
            if column["jsonPath"].startswith(".metadata."):
                continue  # the API server's own schema
            node = schema
            for part in column["jsonPath"].split("[")[0].strip(".").split("."):
                node = node["properties"][part]
            if node["type"] != "array":
                assert node["type"] == column["type"], column


def test_workflow_schema_is_typed_from_the_models() -> None:
    schema = openapi_schema(Workflow)
    assert schema["required"] == ["spec"]
    spec = schema["properties"]["spec"]
    steps = spec["properties"]["steps"]
    assert (steps["minItems"], steps["maxItems"]) == (1, 256)
    assert steps["x-kubernetes-list-map-keys"] == ["name"]
    assert steps["items"]["properties"]["name"]["pattern"] == "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    assert spec["properties"]["strategy"] == {
        "description": spec["properties"]["strategy"]["description"],
        "type": "string",
        "enum": ["Sequential", "Parallel", "DAG"],
        "default": "Sequential",
    }
    status = schema["properties"]["status"]
    assert "nullable" not in status
    assert status["properties"]["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed"]
    step_status = status["properties"]["steps"]["items"]
    assert step_status["properties"]["startedAt"] == {
        "type": "string",
        "format": "date-time",
        "nullable": True,
    }
    # Field docstrings reach the CRD, so `kubectl explain` shows them.
    assert "CEL condition" in steps["items"]["properties"]["when"]["description"]


def test_cel_rules_name_their_field() -> None:
    checked = 0
    for crd in CRDS.values():
        for path, node in nodes(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]):
            for rule in node.get("x-kubernetes-validations", []):
                named = [field for field in node["properties"] if field in rule["message"]]
                assert named, f"{path}: message {rule['message']!r} names no field"
                if "fieldPath" in rule:
                    assert rule["fieldPath"].strip(".") in node["properties"], path
                checked += 1
    assert checked >= 7


def _named(name: str) -> dict[str, Any]:
    spec = {"agents": [{"name": "a"}], "steps": [{"name": "s", "agent": "a"}]}
    return {
        "apiVersion": "agentflow.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_a_workflow_name_that_cannot_be_a_label_value_is_rejected_by_crd_and_models() -> None:
    from tests.support.crd_schema import crd_errors

    longest = "w" * MAX_WORKFLOW_NAME_LENGTH
    assert crd_errors(_named(longest)) == []
    assert Workflow.model_validate(_named(longest)).metadata.name == longest
    too_long = _named(longest + "w")
    assert crd_errors(too_long) == [f"<root>: {WORKFLOW_NAME_MESSAGE}"]
    with pytest.raises(ValidationError, match="label on the Workflow's Jobs"):
        Workflow.model_validate(too_long)
    rules = CRDS["Workflow"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "x-kubernetes-validations"
    ]
    assert rules == [{"rule": "self.metadata.name.size() <= 63", "message": WORKFLOW_NAME_MESSAGE}]


def test_spec_rules_live_on_the_spec() -> None:
    rules = WorkflowSpec.model_json_schema()["x-kubernetes-validations"]
    spec = openapi_schema(Workflow)["properties"]["spec"]
    assert spec["x-kubernetes-validations"] == rules


# --------------------------------------------------------------------------------------------
# Each rewrite rule, on a small model
# --------------------------------------------------------------------------------------------


class Inner(BaseModel):
    """Inner's own description."""

    model_config = ConfigDict(extra="forbid")
    size: int = Field(default=3, gt=0, lt=10)


def test_refs_are_inlined_and_field_description_wins() -> None:
    class Outer(BaseModel):
        first: Inner = Field(description="The first one.")
        second: Inner

    schema = schema_of(Outer)
    first, second = schema["properties"]["first"], schema["properties"]["second"]
    assert first["description"] == "The first one."
    assert second["description"] == "Inner's own description."
    assert (
        first["properties"]
        == second["properties"]
        == {"size": {"type": "integer", "default": 3, "minimum": 1, "maximum": 9}}
    )
    assert "$defs" not in schema


def test_optional_becomes_nullable_keeping_nested_properties() -> None:
    class Outer(BaseModel):
        inner: Inner | None = None
        name: Annotated[str, Field(max_length=5)] | None = None

    props = schema_of(Outer)["properties"]
    assert props["inner"]["nullable"] is True
    assert props["inner"]["type"] == "object"
    assert "size" in props["inner"]["properties"]
    assert props["name"] == {"type": "string", "nullable": True, "maxLength": 5}
    assert "default" not in props["inner"]


def test_literal_is_an_enum_never_a_const() -> None:
    class Kinds(BaseModel):
        one: Literal["only"] = "only"
        two: Literal["a", "b"]

    props = schema_of(Kinds)["properties"]
    assert props["one"] == {"type": "string", "enum": ["only"], "default": "only"}
    assert props["two"] == {"type": "string", "enum": ["a", "b"]}


def test_exclusive_bounds_become_inclusive_for_integers_and_boolean_for_numbers() -> None:
    class Bounds(BaseModel):
        count: int = Field(gt=0, lt=100)
        ratio: float = Field(gt=0.5, lt=1.5)

    props = schema_of(Bounds)["properties"]
    assert props["count"] == {"type": "integer", "minimum": 1, "maximum": 99}
    assert props["ratio"] == {
        "type": "number",
        "minimum": 0.5,
        "exclusiveMinimum": True,
        "maximum": 1.5,
        "exclusiveMaximum": True,
    }


def test_titles_forbid_and_null_defaults_are_dropped_real_defaults_kept() -> None:
    class Plain(BaseModel):
        model_config = ConfigDict(extra="forbid", title="Custom")
        flag: bool = False
        note: str | None = None

    schema = schema_of(Plain)
    assert "title" not in schema
    assert "additionalProperties" not in schema
    assert schema["properties"]["flag"] == {"type": "boolean", "default": False}
    assert schema["properties"]["note"] == {"type": "string", "nullable": True}


def test_dicts_sets_datetimes_and_any() -> None:
    class Shapes(BaseModel):
        counts: dict[str, int] = Field(max_length=4)
        tags: set[str]
        when: datetime
        anything: dict[str, Any]

    props = schema_of(Shapes)["properties"]
    assert props["counts"] == {
        "type": "object",
        "maxProperties": 4,
        "additionalProperties": {"type": "integer"},
    }
    assert props["tags"] == {
        "type": "array",
        "x-kubernetes-list-type": "set",
        "items": {"type": "string"},
    }
    assert props["when"] == {"type": "string", "format": "date-time"}
    assert props["anything"] == {
        "type": "object",
        "additionalProperties": {"x-kubernetes-preserve-unknown-fields": True},
    }


def test_unions_other_than_optional_are_refused() -> None:
    class Either(BaseModel):
        value: int | str

    with pytest.raises(StructuralSchemaError, match=r"\.value: unions other than X \| None"):
        schema_of(Either)


def test_recursive_models_are_refused() -> None:
    class Tree(BaseModel):
        children: list[Tree] = Field(default_factory=list)

    Tree.model_rebuild()
    with pytest.raises(StructuralSchemaError, match="refers to itself"):
        schema_of(Tree)


def test_unknown_keywords_are_refused() -> None:
    with pytest.raises(StructuralSchemaError, match="unsupported schema keyword 'if'"):
        structural({"type": "object", "if": {}})


def test_schema_extras_pass_through() -> None:
    class Listed(BaseModel):
        model_config = ConfigDict(
            json_schema_extra={"x-kubernetes-validations": [{"rule": "true", "message": "m"}]}
        )
        names: list[str] = Field(json_schema_extra={"x-kubernetes-list-type": "set"})

    schema = schema_of(Listed)
    assert schema["x-kubernetes-validations"] == [{"rule": "true", "message": "m"}]
    assert schema["properties"]["names"]["x-kubernetes-list-type"] == "set"


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def test_cli_writes_checks_and_removes_stale_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--out",
        str(tmp_path / "crds"),
        "--chart",
        str(tmp_path / "chart"),
        "--docs",
        str(tmp_path / "api.md"),
    ]
    assert crdgen.main([*args, "--check"]) == 1
    assert "missing" in capsys.readouterr().out
    assert not (tmp_path / "crds").exists(), "--check must not write"

    assert crdgen.main(args) == 0
    written = tmp_path / "crds" / "agentflow.dev_workflows.yaml"
    assert yaml.safe_load(written.read_text())["kind"] == "CustomResourceDefinition"
    assert written.read_text().startswith("# Generated by `make crds`")
    assert crdgen.main([*args, "--check"]) == 0

    docs = tmp_path / "api.md"
    docs.write_text(docs.read_text() + "hand edit\n")
    stale = tmp_path / "chart" / "agentflow.dev_gadgets.yaml"
    stale.write_text("old")
    capsys.readouterr()
    assert crdgen.main([*args, "--check"]) == 1
    captured = capsys.readouterr()
    assert f"{docs}: +0 -1 lines" in captured.out
    assert f"{stale}: stale" in captured.out
    assert "run `make crds`" in captured.err

    assert crdgen.main(args) == 0
    assert not stale.exists()
    assert crdgen.main([*args, "--check"]) == 0


# --------------------------------------------------------------------------------------------
# docs/api.md
# --------------------------------------------------------------------------------------------


def test_api_reference_documents_every_field() -> None:
    text = generated_files(OUT, docs=DOCS)[DOCS]
    assert "Generated by `make crds`" in text.splitlines()[2]
    for kind, crd in CRDS.items():
        assert f"## {kind}\n" in text
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in nodes(schema):
            name = path.rsplit(".", 1)[-1].split("[")[0]
            if name:
                assert f"| `{name}` |" in text, f"{kind}{path} is not documented"
            for rule in node.get("x-kubernetes-validations", []):
                assert rule["message"] in text
    assert "| `dependsOn` | []string |  |  | <= 32 items; unique items; each item: 1..40 chars" in (
        text
    )
