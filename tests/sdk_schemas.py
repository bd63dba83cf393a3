"""JSON schemas as the SDKs emit them, written out as the JSON they send (issue 19).

Each entry: the schema, and the keywords llguidance cannot enforce in it (reported, not refused,
unless the request says `strict: true`). Shared by the schema checks, the HTTP tests of every
dialect and the end-to-end ones.
"""

from __future__ import annotations

from typing import Any

# zod 4 `z.record(z.string(), z.any())` inside an object, as Claude Code's TaskCreate sends it.
ZOD_RECORD: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "subject": {"description": "A brief title for the task", "type": "string"},
        "metadata": {
            "description": "Arbitrary metadata to attach to the task",
            "type": "object",
            "propertyNames": {"type": "string"},
            "additionalProperties": {},
        },
    },
    "required": ["subject"],
    "additionalProperties": False,
}

SDK_SCHEMAS: dict[str, tuple[dict[str, Any], frozenset[str]]] = {
    "zod record": (ZOD_RECORD, frozenset({"propertyNames"})),
    # zod `z.record(z.enum([...]), z.number())` via zod-to-json-schema (Vercel AI SDK 6)
    "zod record with enum keys": (
        {
            "type": "object",
            "properties": {
                "scores": {
                    "type": "object",
                    "propertyNames": {"enum": ["math", "art"]},
                    "additionalProperties": {"type": "number"},
                }
            },
            "required": ["scores"],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
        frozenset({"propertyNames"}),
    ),
    # zod `z.union([z.string(), z.number()])` and `z.discriminatedUnion`
    "zod unions": (
        {
            "type": "object",
            "properties": {
                "id": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                "shape": {
                    "oneOf": [
                        {
                            "type": "object",
                            "properties": {
                                "kind": {"type": "string", "const": "circle"},
                                "r": {"type": "number"},
                            },
                            "required": ["kind", "r"],
                            "additionalProperties": False,
                        },
                        {
                            "type": "object",
                            "properties": {
                                "kind": {"type": "string", "const": "square"},
                                "side": {"type": "number"},
                            },
                            "required": ["kind", "side"],
                            "additionalProperties": False,
                        },
                    ]
                },
            },
            "required": ["id", "shape"],
            "additionalProperties": False,
        },
        frozenset(),
    ),
    # zod `.optional()` fields: left out of `required`
    "zod optional fields": (
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
        frozenset(),
    ),
    # pydantic 2 `model_json_schema()` of a model with Optional fields and an Enum
    # (`name: str = Field(max_length=20)`, `nickname: Optional[str] = None`, `color: Color`)
    "pydantic Optional and Enum": (
        {
            "$defs": {"Color": {"enum": ["red", "green"], "title": "Color", "type": "string"}},
            "properties": {
                "name": {"maxLength": 20, "title": "Name", "type": "string"},
                "nickname": {
                    "anyOf": [{"maxLength": 20, "type": "string"}, {"type": "null"}],
                    "default": None,
                    "title": "Nickname",
                },
                "color": {"$ref": "#/$defs/Color"},
            },
            "required": ["name", "color"],
            "title": "Person",
            "type": "object",
        },
        frozenset(),
    ),
    # the openai SDK's strict form of the same model (`to_strict_json_schema`)
    "openai strict pydantic": (
        {
            "$defs": {"Color": {"enum": ["red", "green"], "title": "Color", "type": "string"}},
            "properties": {
                "name": {"maxLength": 20, "title": "Name", "type": "string"},
                "nickname": {
                    "anyOf": [{"maxLength": 20, "type": "string"}, {"type": "null"}],
                    "title": "Nickname",
                },
                "color": {"$ref": "#/$defs/Color"},
            },
            "required": ["name", "nickname", "color"],
            "title": "Person",
            "type": "object",
            "additionalProperties": False,
        },
        frozenset(),
    ),
    # nested arrays: a matrix and a list of objects
    "nested arrays": (
        {
            "type": "object",
            "properties": {
                "matrix": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
                    "maxItems": 3,
                },
                "rows": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"k": {"type": "string"}},
                        "required": ["k"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["matrix", "rows"],
            "additionalProperties": False,
        },
        frozenset(),
    ),
}


def closed(schema: dict[str, Any]) -> bool:
    """Whether every object of the schema says `additionalProperties: false` (strict-ready)."""
    from tholos_mlx.schema_check import open_object

    return open_object(schema) is None
