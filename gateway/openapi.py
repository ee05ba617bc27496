"""
The OpenAPI 3.1 description of the gateway's HTTP API.

Asked with a session's token, it also describes each of that session's
perspective methods (from the broker's introspection) as its own path.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openAPIDocument"]

_ERROR_STATUSES = {
    "400": "Bad JSON, a bad body or argument shape, or an unmappable value.",
    "401": "No token, a bad or expired token, or bad credentials.",
    "403": "Not allowed.",
    "404": "Unknown handle, method or route.",
    "405": "Method not allowed.",
    "413": "Body too large.",
    "422": "The remote method raised a pb.Error.",
    "429": "Too many handles or requests.",
    "500": "The remote method raised another exception.",
    "503": "The broker is unreachable.",
    "504": "The call timed out.",
}

_VALUE = {"description": "A value in the JSON value mapping (docs/json-mapping.md)."}


def _errors(*statuses: str) -> dict[str, Any]:
    return {
        status: {
            "description": _ERROR_STATUSES[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status in statuses
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_CALL_ERRORS = ("400", "401", "404", "413", "422", "429", "500", "503", "504")
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]


def _callOperation(summary: str, parameters: list[dict[str, Any]], secured: bool,
                   body: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": parameters,
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": body or {"$ref": "#/components/schemas/CallBody"}
                }
            },
        },
        "responses": {
            "200": _json({"$ref": "#/components/schemas/Result"}, "The call's result."),
            **_errors(*_CALL_ERRORS),
        },
    }
    if secured:
        operation["security"] = _SECURED
    return operation


def _pathParameter(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
            "description": description}


def _methodBody(method: dict[str, Any]) -> dict[str, Any]:
    params = [p for p in method.get("params", []) if isinstance(p, dict)]
    positional = [p for p in params if p.get("kind") in ("positional", "positional-only")]
    keywords = [p for p in params if p.get("kind") in ("positional", "keyword-only")]
    variadic = any(p.get("kind") == "var-positional" for p in params)
    argsSchema: dict[str, Any] = {"type": "array"}
    if positional:
        # JSON Schema wants at least one schema in prefixItems.
        argsSchema["prefixItems"] = [
            {"title": p.get("name"), "description": p.get("annotation") or "any value"}
            for p in positional
        ]
    if not variadic:
        argsSchema["maxItems"] = len(positional)
    kwargsSchema: dict[str, Any] = {
        "type": "object",
        "properties": {
            p["name"]: {"description": p.get("annotation") or "any value"} for p in keywords
        },
    }
    if not any(p.get("kind") == "var-keyword" for p in params):
        kwargsSchema["additionalProperties"] = False
    return {
        "oneOf": [
            argsSchema,
            {"type": "object", "properties": {"args": argsSchema, "kwargs": kwargsSchema},
             "additionalProperties": False},
        ]
    }


def openAPIDocument(methods: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """
    The OpenAPI document; with C{methods} (a session's introspection), one
    path per perspective method as well.
    """
    paths: dict[str, Any] = {
        "/api/login": {
            "post": {
                "summary": "Log in to the broker (password or anonymous); opens a session.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/LoginBody"}}},
                },
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/LoginResult"}, "A session."),
                    **_errors("400", "401", "413", "503", "504"),
                },
            }
        },
        "/api/logout": {
            "post": {
                "summary": "End the session: the avatar's logout runs on the broker.",
                "security": _SECURED,
                "responses": {"200": _json({"$ref": "#/components/schemas/Result"}, "Done."),
                              **_errors("401")},
            }
        },
        "/api/call/{method}": {
            "post": _callOperation(
                "Call perspective_METHOD on the session's avatar.",
                [_pathParameter("method", "The perspective method's name.")], True,
            )
        },
        "/api/root/{method}": {
            "post": _callOperation(
                "Call remote_METHOD on the broker's root object (no session).",
                [_pathParameter("method", "The root method's name.")], False,
            )
        },
        "/api/refs/{handle}/{method}": {
            "post": _callOperation(
                "Call remote_METHOD on a referenced object.",
                [_pathParameter("handle", "A reference handle."),
                 _pathParameter("method", "The method's name.")], True,
            )
        },
        "/api/refs/{handle}": {
            "delete": {
                "summary": "Release a reference (the broker sees the decref).",
                "security": _SECURED,
                "parameters": [_pathParameter("handle", "A reference handle.")],
                "responses": {"200": _json({"$ref": "#/components/schemas/Result"}, "Released."),
                              **_errors("401", "404")},
            }
        },
        "/api/caches/{handle}": {
            "get": {
                "summary": "The mirrored state and sequence number of a cache.",
                "security": _SECURED,
                "parameters": [_pathParameter("handle", "A cache handle.")],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Cache"}, "The cache."),
                    **_errors("401", "404"),
                },
            },
            "delete": {
                "summary": "Release a cache (the broker's stoppedObserving runs).",
                "security": _SECURED,
                "parameters": [_pathParameter("handle", "A cache handle.")],
                "responses": {"200": _json({"$ref": "#/components/schemas/Result"}, "Released."),
                              **_errors("401", "404")},
            },
        },
        "/api/describe": {
            "get": {
                "summary": "Introspection of the session's perspective, or of the root object.",
                "responses": {"200": _json({"$ref": "#/components/schemas/Result"},
                                           "The description, or null without introspection."),
                              **_errors("401", "503", "504")},
            }
        },
        "/api/openapi.json": {
            "get": {"summary": "This document.",
                    "responses": {"200": {"description": "OpenAPI 3.1"}}}
        },
        "/healthz": {"get": {"summary": "The process is up.",
                             "responses": {"200": {"description": "Up."}}}},
        "/readyz": {"get": {"summary": "The broker is reachable.",
                            "responses": {"200": {"description": "Ready."}, **_errors("503")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics.",
                             "responses": {"200": {"description": "Text exposition format."}}}},
    }
    for method in methods or []:
        name = method.get("name")
        if not isinstance(name, str):
            continue
        operation = _callOperation(
            method.get("doc") or f"Call perspective_{name}.", [], True, _methodBody(method)
        )
        operation["operationId"] = f"call_{name}"
        paths[f"/api/call/{name}"] = {"post": operation}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pb-gateway",
            "version": "1",
            "description": "JSON over HTTP in front of a Perspective Broker service.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["type", "message", "code"],
                        "properties": {"type": {"type": "string"},
                                       "message": {"type": "string"},
                                       "code": {"type": "string"}},
                    }},
                },
                "LoginBody": {
                    "type": "object",
                    "properties": {"username": {"type": "string"},
                                   "password": {"type": "string"},
                                   "anonymous": {"type": "boolean"},
                                   "mind": {"type": "boolean"}},
                    "additionalProperties": False,
                },
                "LoginResult": {
                    "type": "object",
                    "required": ["token", "expires_in", "methods"],
                    "properties": {"token": {"type": "string"},
                                   "expires_in": {"type": "number"},
                                   "methods": {"type": ["array", "null"]}},
                },
                "CallBody": {
                    "oneOf": [
                        {"type": "array", "items": _VALUE},
                        {"type": "object",
                         "properties": {"args": {"type": "array", "items": _VALUE},
                                        "kwargs": {"type": "object"}},
                         "additionalProperties": False},
                    ]
                },
                "Result": {"type": "object", "required": ["result"],
                           "properties": {"result": _VALUE}},
                "Cache": {
                    "type": "object",
                    "required": ["$cache", "type", "state", "seq"],
                    "properties": {"$cache": {"type": "string"}, "type": {"type": "string"},
                                   "state": _VALUE, "seq": {"type": "integer"}},
                },
            },
        },
    }
