"""
Tests for the public names of L{pb}: everything in C{pb.__all__} exists and is the object
it claims to be, and the reference PB API (the names classic PB examples use) is importable
from C{pb} with the documented call signatures.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.interface import InterfaceClass

import pb
import pb.broker
import pb.credentials
import pb.errors
import pb.factory
import pb.flavors
import pb.jelly
import pb.live
import pb.login

# Where each exported name is defined: (module, attribute).  An alias names the object
# it stands for.
_DEFINITIONS: dict[str, tuple[Any, str]] = {
    "MAX_BROKER_REFS": (pb.broker, "MAX_BROKER_REFS"),
    "LiveDict": (pb.live, "LiveDict"),
    "LiveDictMirror": (pb.live, "LiveDictMirror"),
    "LiveList": (pb.live, "LiveList"),
    "LiveListMirror": (pb.live, "LiveListMirror"),
    "applyDelta": (pb.live, "applyDelta"),
    "ArgumentError": (pb.errors, "ArgumentError"),
    "AsReferenceable": (pb.login, "AsReferenceable"),
    "Avatar": (pb.login, "Avatar"),
    "Broker": (pb.broker, "Broker"),
    "BrokerOptions": (pb.broker, "BrokerOptions"),
    "Cacheable": (pb.flavors, "Cacheable"),
    "CallTimeout": (pb.errors, "CallTimeout"),
    "Copyable": (pb.flavors, "Copyable"),
    "CopyableFailure": (pb.broker, "CopyableFailure"),
    "DeadReferenceError": (pb.errors, "DeadReferenceError"),
    "Error": (pb.errors, "Error"),
    "GenericCopy": (pb.jelly, "GenericCopy"),
    "GenericRemoteCache": (pb.flavors, "GenericRemoteCache"),
    "IPBRoot": (pb.flavors, "IPBRoot"),
    "IPerspective": (pb.login, "IPerspective"),
    "IUsernameMD5Password": (pb.credentials, "IUsernameMD5Password"),
    "InsecureJelly": (pb.jelly, "InsecureJelly"),
    "JellyError": (pb.jelly, "JellyError"),
    "Jellyable": (pb.jelly, "Jellyable"),
    "LoginFailed": (pb.errors, "LoginFailed"),
    "LoginThrottled": (pb.errors, "LoginThrottled"),
    "NoSuchMethod": (pb.errors, "NoSuchMethod"),
    "PBClientFactory": (pb.factory, "PBClientFactory"),
    "PBConnectionLost": (pb.errors, "PBConnectionLost"),
    "PBServerFactory": (pb.factory, "PBServerFactory"),
    "Perspective": (pb.login, "Perspective"),
    "ProtocolError": (pb.errors, "ProtocolError"),
    "Realm": (pb.login, "Realm"),
    "Referenceable": (pb.flavors, "Referenceable"),
    "RemoteCache": (pb.flavors, "RemoteCache"),
    "RemoteCacheObserver": (pb.flavors, "RemoteCacheObserver"),
    "RemoteCopy": (pb.flavors, "RemoteCopy"),
    "RemoteError": (pb.errors, "RemoteError"),
    "RemoteMethod": (pb.broker, "RemoteMethod"),
    "RemoteReference": (pb.broker, "RemoteReference"),
    "Root": (pb.flavors, "Root"),
    "Serializable": (pb.flavors, "Serializable"),
    "TooLarge": (pb.errors, "TooLarge"),
    "TypeRegistry": (pb.jelly, "TypeRegistry"),
    "Unjellyable": (pb.jelly, "Unjellyable"),
    "UnsafeValue": (pb.errors, "UnsafeValue"),
    "ViewPoint": (pb.flavors, "ViewPoint"),
    "Viewable": (pb.flavors, "Viewable"),
    "challenge": (pb.login, "challenge"),
    "connect": (pb.factory, "connect"),
    "getObjectAt": (pb.factory, "getObjectAt"),
    "respond": (pb.login, "respond"),
    "setCopierForClass": (pb.jelly, "setUnjellyableForClass"),
    "setCopierForClassTree": (pb.jelly, "setUnjellyableForClassTree"),
    "setFactoryForClass": (pb.jelly, "setUnjellyableFactoryForClass"),
    "setUnjellyableFactoryForClass": (pb.jelly, "setUnjellyableFactoryForClass"),
    "setUnjellyableForClass": (pb.jelly, "setUnjellyableForClass"),
    "setUnjellyableForClassTree": (pb.jelly, "setUnjellyableForClassTree"),
}


def _binds(function: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """
    Whether C{function(*args, **kwargs)} fits C{function}'s signature.
    """
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


class AllTests(SynchronousTestCase):
    """
    C{pb.__all__} lists what C{pb} exports, and each name is the object it stands for.
    """

    def test_everyNameExists(self) -> None:
        """
        Every name in C{pb.__all__} is an attribute of C{pb}, listed once.
        """
        missing = [name for name in pb.__all__ if not hasattr(pb, name)]
        self.assertEqual(missing, [])
        self.assertEqual(len(pb.__all__), len(set(pb.__all__)))

    def test_everyNameIsAccountedFor(self) -> None:
        """
        This test knows where every exported name comes from; a name added to
        C{pb.__all__} without an entry here, or removed from it, fails.
        """
        self.assertEqual(sorted(set(pb.__all__) - {"jelly", "portno"}), sorted(_DEFINITIONS))

    def test_namesAreTheObjectsTheyClaim(self) -> None:
        """
        Each exported name is the very object defined in its module (C{pb.Root is
        pb.flavors.Root}), not a copy or a wrapper; aliases are the object they alias.
        """
        for name, (module, attribute) in _DEFINITIONS.items():
            self.assertIs(getattr(pb, name), getattr(module, attribute), name)

    def test_jellyIsTheModule(self) -> None:
        """
        C{pb.jelly} is the jelly module, so C{pb.jelly.jelly} and C{pb.jelly.unjelly}
        read as in the reference.
        """
        self.assertIs(pb.jelly, sys.modules["pb.jelly"])
        self.assertTrue(callable(pb.jelly.jelly))
        self.assertTrue(callable(pb.jelly.unjelly))

    def test_portno(self) -> None:
        """
        C{pb.portno} is Twisted's traditional PB port number.
        """
        self.assertEqual(pb.portno, 8787)

    def test_errorHierarchy(self) -> None:
        """
        The errors the reference names derive from L{pb.Error}, which is an L{Exception}.
        """
        self.assertTrue(issubclass(pb.Error, Exception))
        for cls in (pb.DeadReferenceError, pb.PBConnectionLost, pb.RemoteError):
            self.assertTrue(issubclass(cls, pb.Error), cls)


class ReferenceAPITests(SynchronousTestCase):
    """
    The reference PB API is importable from C{pb} with its documented signatures.
    """

    def test_flavorsAreClasses(self) -> None:
        """
        The flavors and their relatives are classes: C{Root} is a C{Referenceable},
        C{Perspective} an C{Avatar}, C{Cacheable} a C{Copyable}, C{RemoteCache} a
        C{RemoteCopy}, C{ViewPoint} a C{Referenceable}.
        """
        self.assertTrue(issubclass(pb.Root, pb.Referenceable))
        self.assertTrue(issubclass(pb.Perspective, pb.Avatar))
        self.assertTrue(issubclass(pb.Cacheable, pb.Copyable))
        self.assertTrue(issubclass(pb.RemoteCache, pb.RemoteCopy))
        self.assertTrue(issubclass(pb.ViewPoint, pb.Referenceable))
        self.assertTrue(issubclass(pb.Copyable, pb.jelly.Jellyable))
        self.assertTrue(issubclass(pb.RemoteCopy, pb.jelly.Unjellyable))

    def test_rootObject(self) -> None:
        """
        C{Root().rootObject(broker)} returns the root itself by default.
        """
        root = pb.Root()
        self.assertIs(root.rootObject(pb.Broker()), root)

    def test_avatarAndPerspective(self) -> None:
        """
        C{Avatar()} and C{Avatar(avatarId)} both work, C{Perspective(avatarId)} keeps
        its id, both provide C{IPerspective}, and C{logout()} takes no arguments.
        """
        self.assertIsNone(pb.Avatar().avatarId)
        self.assertEqual(pb.Avatar(b"alice").avatarId, b"alice")
        perspective = pb.Perspective(b"bob")
        self.assertEqual(perspective.avatarId, b"bob")
        self.assertTrue(pb.IPerspective.providedBy(perspective))
        self.assertTrue(pb.IPerspective.providedBy(pb.Avatar()))
        self.assertIsNone(perspective.logout())
        self.assertTrue(_binds(perspective.perspectiveMessageReceived, None, "m", (), {}))

    def test_iPerspective(self) -> None:
        """
        C{IPerspective} is a zope interface declaring
        C{perspectiveMessageReceived(broker, message, args, kw)}.
        """
        self.assertIsInstance(pb.IPerspective, InterfaceClass)
        self.assertEqual(
            pb.IPerspective["perspectiveMessageReceived"].getSignatureString(),
            "(broker, message, args, kw)",
        )

    def test_broker(self) -> None:
        """
        C{Broker(isClient=True, security=None)}, with C{registerReference(object)}
        returning an int ID and C{unregisterReference(refnum)} forgetting it.
        """
        self.assertTrue(_binds(pb.Broker, isClient=True, security=None))
        self.assertTrue(_binds(pb.Broker, False, None))
        broker = pb.Broker(isClient=False, security=None)
        thing = pb.Referenceable()
        refnum = broker.registerReference(thing)
        self.assertIsInstance(refnum, int)
        self.assertIs(broker.localObjectForID(refnum), thing)
        broker.unregisterReference(refnum)
        self.assertIsNone(broker.localObjectForID(refnum))

    def test_clientFactory(self) -> None:
        """
        C{PBClientFactory()} takes no required arguments and has C{getRootObject()},
        C{login(credentials, client=None)} and C{buildProtocol(addr)} returning a
        client L{pb.Broker}.
        """
        factory = pb.PBClientFactory()
        self.assertTrue(_binds(factory.getRootObject))
        self.assertTrue(_binds(factory.login, object()))
        self.assertTrue(_binds(factory.login, object(), client=None))
        self.assertIsNone(inspect.signature(factory.login).parameters["client"].default)
        broker = factory.buildProtocol(None)
        self.assertIsInstance(broker, pb.Broker)
        self.assertTrue(broker.isClient)

    def test_serverFactory(self) -> None:
        """
        C{PBServerFactory(root, security=None, portal=None)}: the second positional
        argument is the security object (not Twisted's C{unsafeTracebacks}), and the
        three are kept as attributes.
        """
        parameters = list(inspect.signature(pb.PBServerFactory).parameters.values())
        self.assertEqual([p.name for p in parameters[:3]], ["root", "security", "portal"])
        self.assertEqual([p.default for p in parameters[1:3]], [None, None])
        registry = pb.TypeRegistry()
        root = pb.Root()
        factory = pb.PBServerFactory(root, registry)
        self.assertIs(factory.security, registry)
        self.assertIsNone(factory.portal)
        self.assertFalse(factory.options.unsafeTracebacks)
        broker = factory.buildProtocol(None)
        self.assertIsInstance(broker, pb.Broker)
        self.assertFalse(broker.isClient)
        self.assertIs(broker.localObjectForID(b"root"), root)

    def test_connectAndGetObjectAt(self) -> None:
        """
        C{connect(host, port, factory, contextFactory=None, bindAddress=None)} and
        C{getObjectAt(host, port, timeout=30)}.
        """
        connect = inspect.signature(pb.connect).parameters
        self.assertEqual(
            list(connect)[:5], ["host", "port", "factory", "contextFactory", "bindAddress"]
        )
        self.assertIsNone(connect["contextFactory"].default)
        self.assertIsNone(connect["bindAddress"].default)
        getObjectAt = inspect.signature(pb.getObjectAt).parameters
        self.assertEqual(list(getObjectAt)[:3], ["host", "port", "timeout"])
        self.assertEqual(getObjectAt["timeout"].default, 30)

    def test_remoteReference(self) -> None:
        """
        C{RemoteReference} has C{callRemote(method, *args, **kwargs)},
        C{remoteMethod(method)} and C{notifyOnDisconnect(callback)}.
        """
        ref = pb.RemoteReference(None, pb.Broker(), 1, False)
        self.assertTrue(_binds(ref.callRemote, "add", 1, 2, x=3))
        self.assertTrue(_binds(ref.remoteMethod, "add"))
        self.assertTrue(_binds(ref.notifyOnDisconnect, lambda r: None))
        self.assertIsInstance(ref.remoteMethod("add"), pb.RemoteMethod)

    def test_viewPoint(self) -> None:
        """
        C{ViewPoint} is built from a perspective and the viewed object (the
        reference documents the second argument as C{broker}; like Twisted's, ours is
        the object whose C{view_*} methods are called).
        """
        perspective, viewed = object(), pb.Viewable()
        viewPoint = pb.ViewPoint(perspective, viewed)
        self.assertIs(viewPoint.perspective, perspective)
        self.assertIs(viewPoint.object, viewed)

    def test_realm(self) -> None:
        """
        C{Realm().requestAvatar(avatarId, mind, *interfaces)} returns
        C{(IPerspective, avatar, avatar.logout)}.
        """
        interface, avatar, logout = pb.Realm().requestAvatar(b"alice", None, pb.IPerspective)
        self.assertIs(interface, pb.IPerspective)
        self.assertIsInstance(avatar, pb.Avatar)
        self.assertEqual(avatar.avatarId, b"alice")
        self.assertEqual(logout, avatar.logout)

    def test_copyable(self) -> None:
        """
        C{Copyable.getStateToCopy()} returns the instance's state (its C{__dict__}) and
        C{RemoteCopy.setCopyableState(state)} restores it.
        """

        class Point(pb.Copyable, pb.RemoteCopy):
            pass

        point = Point()
        point.x = 1
        self.assertEqual(point.getStateToCopy(), {"x": 1})
        copy = Point()
        copy.setCopyableState({"x": 2})
        self.assertEqual(copy.x, 2)

    def test_cacheable(self) -> None:
        """
        C{Cacheable.getStateToCacheAndObserveFor(perspective, observer)} returns the
        state to cache, and C{RemoteCache.setCacheableState(state)} receives it.
        """
        cacheable = pb.Cacheable()
        cacheable.value = 3
        self.assertEqual(cacheable.getStateToCacheAndObserveFor(None, None), {"value": 3})
        cache = pb.RemoteCache()
        cache.setCacheableState({"value": 4})
        self.assertEqual(cache.value, 4)

    def test_setUnjellyableForClass(self) -> None:
        """
        C{setUnjellyableForClass(classname, unjellyable)} takes a class name (or the
        class) and the local class.
        """
        self.assertTrue(_binds(pb.setUnjellyableForClass, "a.B", pb.RemoteCopy))
        self.assertEqual(
            list(inspect.signature(pb.setUnjellyableForClass).parameters),
            ["classname", "unjellyable"],
        )

    def test_copyableFailure(self) -> None:
        """
        C{CopyableFailure(failure)} carries C{.type} (the qualified class name),
        C{.value} (the message) and C{.traceback} (text).
        """
        try:
            raise ValueError("boom")
        except ValueError:
            failure = Failure()
        copied = pb.CopyableFailure(failure)
        self.assertEqual(copied.type, "builtins.ValueError")
        self.assertEqual(copied.value, "boom")
        self.assertIsInstance(copied.traceback, str)
        self.assertIn("ValueError", copied.traceback)

    def test_jellyFunctions(self) -> None:
        """
        C{jelly.jelly(object)} and C{jelly.unjelly(jellyData)} take one argument and
        round-trip a value; C{jelly.Jellyable.jellyFor(jellier)} and
        C{jelly.Unjellyable.unjellyFor(unjellier, jellyList)} are the hooks.
        """
        value = {"a": [1, 2.5, b"x", None]}
        self.assertEqual(pb.jelly.unjelly(pb.jelly.jelly(value)), value)
        self.assertTrue(_binds(pb.jelly.Jellyable().jellyFor, object()))
        self.assertTrue(_binds(pb.jelly.Unjellyable().unjellyFor, object(), []))
