"""The CRDs' verdict on a document, as the API server would give it: the generated
``openAPIV3Schema`` checked with ``jsonschema`` after API-server defaulting, unknown fields
rejected, ``x-kubernetes-list-type`` uniqueness and the ``x-kubernetes-validations`` CEL rules
evaluated with the ``cel`` library (:func:`crd_errors`)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cel
import jsonschema
from jsonschema.exceptions import ValidationError

from agentflow.api.crdgen import KINDS, custom_resource_definition

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "workflows"
CRDS = REPO / "crds"
AGENTFLOW_KINDS = {"Workflow", "AgentFallbackPolicy"}


# --------------------------------------------------------------------------------------------
# The CRD's verdict
# --------------------------------------------------------------------------------------------


def _sets_contains(container: list[Any], items: list[Any]) -> bool:
    """Kubernetes' ``sets.contains(list, sublist)``: every element of sublist is in list."""
    return all(item in container for item in items)


def _json_schema(node: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAPI v3 node as JSON Schema: nullable as a type, unknown fields rejected."""
    out = dict(node)
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if "properties" in node:
        out["properties"] = {k: _json_schema(v) for k, v in node["properties"].items()}
        out["additionalProperties"] = False
    if isinstance(node.get("items"), Mapping):
        out["items"] = _json_schema(node["items"])
    if isinstance(node.get("additionalProperties"), Mapping):
        out["additionalProperties"] = _json_schema(node["additionalProperties"])
    return out


def _apply_defaults(node: Mapping[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it before validation."""
    if isinstance(value, dict) and "properties" in node:
        for name, prop in node["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = _apply_defaults(prop, value[name])
    elif isinstance(value, dict) and isinstance(node.get("additionalProperties"), Mapping):
        for key in value:
            value[key] = _apply_defaults(node["additionalProperties"], value[key])
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        return [_apply_defaults(node["items"], item) for item in value]
    return value


def _cel_rules(
    validator: Any, rules: list[dict[str, str]], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    context = cel.Context()
    context.add_function("sets.contains", _sets_contains)
    context.add_variable("self", instance)
    for rule in rules:
        try:
            result = cel.evaluate(rule["rule"], context)
        except Exception as error:  # the API server reports a failing rule as invalid too
            yield ValidationError(f"{rule['message']} (rule error: {error})")
            continue
        if result is not True:
            yield ValidationError(rule["message"])


def _list_type(
    validator: Any, list_type: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not isinstance(instance, list):
        return
    if list_type == "map":
        keys = schema["x-kubernetes-list-map-keys"]
        seen = [tuple(item.get(k) for k in keys) for item in instance if isinstance(item, dict)]
    elif list_type == "set":
        seen = [json.dumps(item, sort_keys=True) for item in instance]
    else:
        return
    duplicates = sorted({repr(key) for key in seen if seen.count(key) > 1})
    if duplicates:
        yield ValidationError(f"Duplicate value: {', '.join(duplicates)}")


KubernetesValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {"x-kubernetes-validations": _cel_rules, "x-kubernetes-list-type": _list_type},
)


@dataclass
class CrdSchema:
    schema: Mapping[str, Any]
    validator: Any = field(init=False)

    def __post_init__(self) -> None:
        self.validator = KubernetesValidator(_json_schema(self.schema))

    def errors(self, document: Mapping[str, Any]) -> list[str]:
        defaulted = _apply_defaults(self.schema, copy.deepcopy(dict(document)))
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in self.validator.iter_errors(defaulted)
        ]


SCHEMAS = {
    info.kind: CrdSchema(
        custom_resource_definition(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    )
    for info in KINDS
}


def crd_errors(document: Mapping[str, Any]) -> list[str]:
    return SCHEMAS[document["kind"]].errors(document)
