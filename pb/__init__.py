"""
pb: a Perspective Broker core, wire-compatible with Twisted's
C{twisted.spread.pb}, without its weak spots.

User code reads like the classic PB examples::

    import pb

    class MathService(pb.Root):
        def remote_add(self, a, b):
            return a + b

    factory = pb.PBServerFactory(MathService())

The codecs (L{pb.banana}, L{pb.jelly}) are sans-IO; L{pb.broker} is the
protocol; L{pb.flavors} the kinds of objects it passes; L{pb.login} and
L{pb.factory} the perspectives, login and connection helpers.
"""

from __future__ import annotations

from . import jelly
from .broker import (
    MAX_BROKER_REFS,
    Broker,
    BrokerOptions,
    CopyableFailure,
    RemoteMethod,
    RemoteReference,
)
from .credentials import IUsernameMD5Password
from .errors import (
    ArgumentError,
    CallTimeout,
    DeadReferenceError,
    Error,
    LoginFailed,
    LoginThrottled,
    NoSuchMethod,
    PBConnectionLost,
    ProtocolError,
    RemoteError,
    TooLarge,
    UnsafeValue,
)
from .factory import PBClientFactory, PBServerFactory, connect, getObjectAt
from .flavors import (
    Cacheable,
    Copyable,
    GenericRemoteCache,
    IPBRoot,
    Referenceable,
    RemoteCache,
    RemoteCacheObserver,
    RemoteCopy,
    Root,
    Serializable,
    Viewable,
    ViewPoint,
)
from .jelly import (
    GenericCopy,
    InsecureJelly,
    Jellyable,
    JellyError,
    TypeRegistry,
    Unjellyable,
    setUnjellyableFactoryForClass,
    setUnjellyableForClass,
    setUnjellyableForClassTree,
)
from .live import LiveDict, LiveDictMirror, LiveList, LiveListMirror, applyDelta
from .login import AsReferenceable, Avatar, IPerspective, Perspective, Realm, challenge, respond

setCopierForClass = setUnjellyableForClass
setCopierForClassTree = setUnjellyableForClassTree
setFactoryForClass = setUnjellyableFactoryForClass

portno = 8787
"""Twisted's traditional PB port number."""

__all__ = [
    "MAX_BROKER_REFS",
    "ArgumentError",
    "AsReferenceable",
    "Avatar",
    "Broker",
    "BrokerOptions",
    "Cacheable",
    "CallTimeout",
    "Copyable",
    "CopyableFailure",
    "DeadReferenceError",
    "Error",
    "GenericCopy",
    "GenericRemoteCache",
    "IPBRoot",
    "IPerspective",
    "IUsernameMD5Password",
    "InsecureJelly",
    "JellyError",
    "Jellyable",
    "LiveDict",
    "LiveDictMirror",
    "LiveList",
    "LiveListMirror",
    "LoginFailed",
    "LoginThrottled",
    "NoSuchMethod",
    "PBClientFactory",
    "PBConnectionLost",
    "PBServerFactory",
    "Perspective",
    "ProtocolError",
    "Realm",
    "Referenceable",
    "RemoteCache",
    "RemoteCacheObserver",
    "RemoteCopy",
    "RemoteError",
    "RemoteMethod",
    "RemoteReference",
    "Root",
    "Serializable",
    "TooLarge",
    "TypeRegistry",
    "Unjellyable",
    "UnsafeValue",
    "ViewPoint",
    "Viewable",
    "applyDelta",
    "challenge",
    "connect",
    "getObjectAt",
    "jelly",
    "portno",
    "respond",
    "setCopierForClass",
    "setCopierForClassTree",
    "setFactoryForClass",
    "setUnjellyableFactoryForClass",
    "setUnjellyableForClass",
    "setUnjellyableForClassTree",
]
