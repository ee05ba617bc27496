"""
Introspection: a PB object describes the methods a caller may use.

Every object a broker built on C{pb} lends answers the remote method
C{"pb:describe"} (the colon makes it impossible to clash with a C{remote_*}
method) with a plain dictionary::

    {"protocol": 1,
     "type": "Calculator",                       # the class name
     "kind": "referenceable" | "perspective" | "view" | "login",
     "doc": "first docstring line" | None,
     "methods": [{"name": "add",
                  "doc": "Add two numbers." | None,
                  "async": False,
                  "params": [{"name": "a", "kind": "positional",
                              "annotation": "int" | None,
                              "default": 0,            # only when there is one
                              "defaultRepr": "0"}]}]}

Parameter kinds are C{positional}, C{positional-only}, C{keyword-only},
C{var-positional} and C{var-keyword}; a view method's first parameter (the
perspective) is left out.  Twisted's brokers lack C{"pb:describe"}: calling it
there fails with a C{NoSuchMethod} remote error (an C{AttributeError} on a
Twisted avatar), and L{describeRemote} then returns L{None}.
"""

from __future__ import annotations

import inspect
from typing import Any

from .errors import NoSuchMethod, RemoteError

__all__ = ["DESCRIBE", "describe", "describeRemote"]

DESCRIBE = "pb:describe"
PROTOCOL = 1

_PREFIXES = {
    "referenceable": "remote_",
    "perspective": "perspective_",
    "view": "view_",
}

_PLAIN = (type(None), bool, int, float, str)

_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional-only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
    inspect.Parameter.VAR_POSITIONAL: "var-positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword-only",
    inspect.Parameter.VAR_KEYWORD: "var-keyword",
}


def _firstLine(doc: str | None) -> str | None:
    if not doc:
        return None
    for line in inspect.cleandoc(doc).splitlines():
        if line.strip():
            return line.strip()
    return None


def _annotation(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def _params(method: Any, skip: int) -> list[dict[str, Any]]:
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return [{"name": "args", "kind": "var-positional", "annotation": None},
                {"name": "kwargs", "kind": "var-keyword", "annotation": None}]
    params = []
    for parameter in list(signature.parameters.values())[skip:]:
        entry: dict[str, Any] = {
            "name": parameter.name,
            "kind": _KINDS[parameter.kind],
            "annotation": _annotation(parameter.annotation),
        }
        if parameter.default is not inspect.Parameter.empty:
            if isinstance(parameter.default, _PLAIN):
                entry["default"] = parameter.default
            entry["defaultRepr"] = repr(parameter.default)
        params.append(entry)
    return params


def _target(obj: Any) -> tuple[str, Any]:
    """
    What kind of object C{obj} is to callers, and the object whose methods
    they reach.
    """
    from .flavors import ViewPoint
    from .login import AsReferenceable

    if getattr(obj, "_pbLogin", False):
        return "login", obj
    if isinstance(obj, AsReferenceable):
        return "perspective", obj.object
    if isinstance(obj, ViewPoint):
        return "view", obj.object
    from .login import IPerspective

    if IPerspective.providedBy(obj) and not hasattr(obj, "remoteMessageReceived"):
        return "perspective", obj
    return "referenceable", obj


def describe(obj: Any) -> dict[str, Any]:
    """
    Describe the remotely callable methods of a lent object.
    """
    kind, target = _target(obj)
    methods: list[dict[str, Any]] = []
    if kind != "login":
        prefix = _PREFIXES[kind]
        skip = 1 if kind == "view" else 0
        for name in sorted(dir(type(target))):
            if not name.startswith(prefix) or len(name) == len(prefix):
                continue
            method = getattr(target, name, None)
            if not callable(method):
                continue
            methods.append(
                {
                    "name": name[len(prefix) :],
                    "doc": _firstLine(getattr(method, "__doc__", None)),
                    "async": inspect.iscoroutinefunction(method),
                    "params": _params(method, skip),
                }
            )
    return {
        "protocol": PROTOCOL,
        "type": type(target).__name__,
        "kind": kind,
        "doc": _firstLine(type(target).__doc__),
        "methods": methods,
    }


async def describeRemote(ref: Any, timeout: float | None = 30) -> dict[str, Any] | None:
    """
    Ask a remote object to describe itself; L{None} when its broker does not
    offer introspection (Twisted's, for one).
    """
    try:
        result = await ref.callRemote(DESCRIBE, _timeout=timeout)
    except NoSuchMethod:
        return None
    except RemoteError as e:
        if e.remoteType.endswith("NoSuchMethod") or "No such method" in e.value:
            return None
        # A Twisted avatar looks up perspective_<name> with getattr: a missing
        # method is an AttributeError there, not a NoSuchMethod.
        if e.remoteType.endswith("AttributeError") and DESCRIBE in e.value:
            return None
        raise
    return result if isinstance(result, dict) else None
