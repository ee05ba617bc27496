"""
A small async Python client for the gateway's REST API, built on treq.

    client = GatewayClient("http://localhost:8080")
    await client.login("alice", "password")
    print(await client.call("add", 5, 3))               # 8
    counter = await client.call("counter")              # a Ref
    await counter.call("increment")
    board = await client.call("board")                  # a Cache
    print(board.state, board.seq)
    await client.logout()

Python values travel in the gateway's JSON value mapping: bytes, tuples,
sets, dates, decimals and so on are tagged on the way out and rebuilt on the
way back; references come back as L{Ref}, caches as L{Cache}, Copyables as
L{Copy}.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
from typing import Any

import attrs
import treq
from treq.client import HTTPClient

from .codec import dumps, loads

__all__ = ["Cache", "Copy", "GatewayClient", "GatewayClientError", "Ref", "fromJSON", "toJSON"]


class GatewayClientError(Exception):
    """
    The gateway answered with an error.
    """

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        self.status = status
        self.error = error
        self.type = str(error.get("type", ""))
        self.code = str(error.get("code", ""))
        self.message = str(error.get("message", ""))
        super().__init__(f"{status} {self.type}: {self.message}")


@attrs.frozen
class Copy:
    """
    A Copyable as the gateway mirrors it: its type name and state.
    """

    typeName: str
    state: Any


@attrs.define
class Ref:
    """
    A reference handle of the client's session.
    """

    client: GatewayClient = attrs.field(repr=False, eq=False)
    handle: str

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """
        Call C{remote_<method>} on the referenced object.
        """
        return await self.client._call(f"/api/refs/{self.handle}/{method}", args, kwargs)

    async def release(self) -> None:
        """
        Release the reference (the broker sees the decref).
        """
        await self.client._request("DELETE", f"/api/refs/{self.handle}")


@attrs.define
class Cache:
    """
    A cache handle of the client's session, with the state last fetched.
    """

    client: GatewayClient = attrs.field(repr=False, eq=False)
    handle: str
    typeName: str
    state: Any
    seq: int

    async def refresh(self) -> Cache:
        """
        Fetch the current mirrored state.
        """
        snapshot = await self.client._request("GET", f"/api/caches/{self.handle}")
        self.state = fromJSON(snapshot["state"], self.client)
        self.seq = snapshot["seq"]
        return self

    async def release(self) -> None:
        """
        Release the cache (the broker's stoppedObserving runs).
        """
        await self.client._request("DELETE", f"/api/caches/{self.handle}")


def toJSON(value: Any) -> Any:
    """
    The JSON value mapping of a Python value.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return {"$float": "nan"}
        if math.isinf(value):
            return {"$float": "inf" if value > 0 else "-inf"}
        return value
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [toJSON(item) for item in value]
    if isinstance(value, tuple):
        return {"$tuple": [toJSON(item) for item in value]}
    if isinstance(value, set):
        return {"$set": [toJSON(item) for item in value]}
    if isinstance(value, frozenset):
        return {"$frozenset": [toJSON(item) for item in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: toJSON(v) for k, v in value.items()}
        return {"$dict": [[toJSON(k), toJSON(v)] for k, v in value.items()]}
    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"$date": value.isoformat()}
    if isinstance(value, datetime.time):
        return {"$time": value.isoformat()}
    if isinstance(value, datetime.timedelta):
        return {"$timedelta": value.total_seconds()}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, Ref):
        return {"$ref": value.handle}
    if isinstance(value, Cache):
        return {"$cache": value.handle}
    if isinstance(value, Copy):
        return {"$copy": value.typeName, "state": toJSON(value.state)}
    raise TypeError(f"{type(value).__name__} has no JSON value mapping")


_SIMPLE_TAGS: dict[str, Any] = {
    "$bytes": lambda v, c: base64.b64decode(v),
    "$tuple": lambda v, c: tuple(fromJSON(i, c) for i in v),
    "$set": lambda v, c: {fromJSON(i, c) for i in v},
    "$frozenset": lambda v, c: frozenset(fromJSON(i, c) for i in v),
    "$dict": lambda v, c: {fromJSON(k, c): fromJSON(i, c) for k, i in v},
    "$datetime": lambda v, c: datetime.datetime.fromisoformat(v),
    "$date": lambda v, c: datetime.date.fromisoformat(v),
    "$time": lambda v, c: datetime.time.fromisoformat(v),
    "$timedelta": lambda v, c: datetime.timedelta(seconds=v),
    "$decimal": lambda v, c: decimal.Decimal(v),
    "$float": lambda v, c: float(v),
    "$ref": lambda v, c: Ref(c, v),
    "$unpersistable": lambda v, c: Copy("unpersistable", v),
}


def fromJSON(value: Any, client: GatewayClient | None = None) -> Any:
    """
    The Python value of the JSON value mapping.
    """
    if isinstance(value, list):
        return [fromJSON(item, client) for item in value]
    if not isinstance(value, dict):
        return value
    for key in value:
        if key.startswith("$"):
            if key == "$copy":
                return Copy(value["$copy"], fromJSON(value.get("state"), client))
            if key == "$cache":
                assert client is not None
                return Cache(client, value["$cache"], value.get("type", ""),
                             fromJSON(value.get("state"), client), value.get("seq", 0))
            return _SIMPLE_TAGS[key](value[key], client)
    return {key: fromJSON(item, client) for key, item in value.items()}


class GatewayClient:
    """
    One session with a gateway (or none, for root calls).
    """

    def __init__(self, url: str, http: HTTPClient | None = None) -> None:
        self.url = url.rstrip("/")
        self.http: Any = http if http is not None else treq
        self.token: str | None = None
        self.methods: list[dict[str, Any]] | None = None

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {b"content-type": [b"application/json"]}
        if self.token is not None:
            headers[b"authorization"] = [b"Bearer " + self.token.encode("ascii")]
        data = dumps(body) if body is not None else None
        response = await self.http.request(method, self.url + path, data=data, headers=headers)
        content = await response.content()
        try:
            parsed = loads(content) if content else None
        except Exception:
            parsed = None
        if response.code >= 400:
            error = parsed.get("error") if isinstance(parsed, dict) else None
            raise GatewayClientError(
                response.code, error if isinstance(error, dict) else {"message": repr(content)}
            )
        return parsed

    async def _call(self, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        body = {"args": toJSON(list(args)), "kwargs": toJSON(kwargs)}
        reply = await self._request("POST", path, body)
        return fromJSON(reply["result"], self)

    async def login(
        self, username: str | None = None, password: str | None = None, anonymous: bool = False
    ) -> dict[str, Any]:
        """
        Open a session (password or anonymous); returns the login reply.
        """
        body: dict[str, Any] = (
            {"anonymous": True} if anonymous else {"username": username, "password": password}
        )
        reply = await self._request("POST", "/api/login", body)
        self.token = reply["token"]
        self.methods = reply.get("methods")
        return dict(reply)

    async def logout(self) -> None:
        """
        End the session (the avatar's logout runs on the broker).
        """
        await self._request("POST", "/api/logout")
        self.token = None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """
        Call C{perspective_<method>} on the session's avatar.
        """
        return await self._call(f"/api/call/{method}", args, kwargs)

    async def callRoot(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """
        Call C{remote_<method>} on the broker's root object.
        """
        return await self._call(f"/api/root/{method}", args, kwargs)

    async def describe(self) -> Any:
        """
        Introspection of the session's perspective (or the root).
        """
        return (await self._request("GET", "/api/describe"))["result"]

    async def cache(self, handle: str) -> Cache:
        """
        The current state of a cache handle.
        """
        snapshot = await self._request("GET", f"/api/caches/{handle}")
        return Cache(self, handle, snapshot["type"], fromJSON(snapshot["state"], self),
                     snapshot["seq"])
