"""Example values from JSON Schema (the OpenAPI components), for generic request bodies."""

from __future__ import annotations

from typing import Any


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def example(spec: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A value valid for ``schema`` as far as its examples, defaults and bounds say."""
    schema = resolve(spec, schema)
    if "examples" in schema and schema["examples"]:
        return schema["examples"][0]
    if "example" in schema:
        return schema["example"]
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if resolve(spec, s).get("type") != "null"]
            return example(spec, options[0], depth + 1) if options else None
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if depth > 4:
            return {}
        required = schema.get("required", [])
        return {
            k: example(spec, v, depth + 1)
            for k, v in schema.get("properties", {}).items()
            if k in required
        }
    if kind == "array":
        return [example(spec, schema.get("items", {}), depth + 1)] * max(
            1, schema.get("minItems", 1)
        )
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        return float(low) + 1.0
    if kind == "boolean":
        return False
    if kind == "string":
        if schema.get("format") == "date-time":
            return "2024-01-01T00:00:00Z"
        return "example"
    return None


def required_keys(spec: dict[str, Any], schema: dict[str, Any] | None) -> tuple[str, list[str]]:
    """('object'|'array'|'', required keys of the object or of the array's items)."""
    if not schema:
        return "", []
    schema = resolve(spec, schema)
    if schema.get("type") == "array":
        return "array", list(resolve(spec, schema.get("items", {})).get("required", []))
    if schema.get("type") == "object" or "properties" in schema:
        return "object", list(schema.get("required", []))
    return "", []
