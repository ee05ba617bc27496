"""
Tests for L{pb.live}: live dicts and lists, their deltas, sequence numbers and
mirrors, over in-memory broker pairs (ours and Twisted's).
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.spread import jelly as twistedJelly
from twisted.spread import pb as twistedPB
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

import pb
from pb.jelly import DEFAULT_REGISTRY
from pb.live import (
    DELTA_METHODS,
    LiveDict,
    LiveDictMirror,
    LiveList,
    LiveListMirror,
    applyDelta,
)


class LiveRoot(pb.Root):
    """
    Serves named live objects: C{get(name)}.
    """

    def __init__(self, **objects: Any) -> None:
        self.objects = objects

    def remote_get(self, name: str) -> Any:
        return self.objects[name]


class Connection:
    """
    One in-memory PB connection to a L{LiveRoot}, with the client's root
    reference.
    """

    def __init__(self, client: Any, server: pb.Broker, pump: IOPump, root: Any) -> None:
        self.client = client
        self.server = server
        self.pump = pump
        self.root = root

    def get(self, testCase: SynchronousTestCase, name: str) -> Any:
        """
        Fetch the live object C{name}; the Deferred is dropped so that only
        the returned copy keeps the cache alive.
        """
        results: list[Any] = []
        self.root.callRemote("get", name).addCallback(results.append)
        self.pump.flush()
        testCase.assertEqual(len(results), 1)
        return results.pop()

    def drop(self) -> None:
        """
        Close the connection from the client's side.
        """
        self.client.transport.loseConnection()
        self.pump.flush()


def connect(
    testCase: SynchronousTestCase,
    root: LiveRoot,
    clientFactory: Any = None,
) -> Connection:
    """
    Connect a client (ours unless C{clientFactory} is given) to C{root}.
    """
    clock = Clock()
    serverFactory = pb.PBServerFactory(root, clock=clock)
    if clientFactory is None:
        clientFactory = pb.PBClientFactory(clock=clock)
    client, server, pump = connectedServerAndClient(
        lambda: serverFactory.buildProtocol(None), lambda: clientFactory.buildProtocol(None)
    )
    roots: list[Any] = []
    clientFactory.getRootObject().addCallback(roots.append)
    pump.flush()
    testCase.assertEqual(len(roots), 1)
    testCase.addCleanup(lambda: (client.transport.loseConnection(), pump.flush()))
    return Connection(client, server, pump, roots[0])


def recordChanges(mirror: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """
    The C{(method, args)} of every change the mirror reports from now on.
    """
    events: list[tuple[str, tuple[Any, ...]]] = []
    mirror.onChange(lambda m, method, args: events.append((method, args)))
    return events


class RecordingObserver:
    """
    A stand-in for a L{pb.RemoteCacheObserver} that keeps what it was sent,
    copied as the wire would copy it.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def callRemote(self, name: str, *args: Any) -> Deferred[None]:
        self.calls.append(("observe_" + name, copy.deepcopy(args)))
        return succeed(None)


def observeWith(live: LiveDict | LiveList, observer: RecordingObserver) -> dict[str, Any]:
    """
    Subscribe C{observer} to C{live} and return the state it would receive.
    """
    state = live.getStateToCacheAndObserveFor(None, cast(pb.RemoteCacheObserver, observer))
    return copy.deepcopy(state)


def mutateDict(live: LiveDict) -> None:
    """
    One of each dict mutation.
    """
    live.set("b", 2)
    live.update({"a": 10, "c": [1, 2]})
    live.delete("b")
    live.set("d", {"nested": True})
    live.reset({"z": "zed"})


def mutateList(live: LiveList) -> None:
    """
    One of each list mutation.
    """
    live.append({"id": 3})
    live.insert(0, {"id": 0})
    live.replace(1, {"id": 1, "done": True})
    live.remove(-1)
    live.reset(["x", "y"])


class DeltaDeliveryTests(SynchronousTestCase):
    """
    Changes reach every observer, in order, with consecutive sequence numbers.
    """

    def test_dictDeltasReachTwoObservers(self) -> None:
        """
        Each dict mutation reaches two mirrors on two connections as the
        documented delta, in order, with seq 1, 2, 3, ...; both mirrors end up
        equal to the server's snapshot.
        """
        live = LiveDict({"a": 1})
        root = LiveRoot(d=live)
        connections = [connect(self, root), connect(self, root)]
        mirrors = [c.get(self, "d") for c in connections]
        for mirror in mirrors:
            self.assertIsInstance(mirror, LiveDictMirror)
            self.assertEqual((mirror.seq, mirror.value), (0, {"a": 1}))
        logs = [recordChanges(m) for m in mirrors]
        self.assertEqual(len(live.observers), 2)

        mutateDict(live)
        for c in connections:
            c.pump.flush()

        expected = [
            ("observe_set", (1, "b", 2)),
            ("observe_update", (2, {"a": 10, "c": [1, 2]})),
            ("observe_delete", (3, "b")),
            ("observe_set", (4, "d", {"nested": True})),
            ("observe_reset", (5, {"z": "zed"})),
        ]
        for mirror, log in zip(mirrors, logs, strict=True):
            self.assertEqual(log, expected)
            self.assertEqual(mirror.value, live.snapshot())
            self.assertEqual(mirror.seq, live.seq)
            self.assertEqual(mirror.seq, 5)
            self.assertFalse(mirror.missed)

    def test_listDeltasReachTwoObservers(self) -> None:
        """
        Each list mutation reaches two mirrors as the documented delta, with
        append sent as an insert at the end and negative indexes resolved.
        """
        live = LiveList([{"id": 1}, {"id": 2}])
        root = LiveRoot(l=live)
        connections = [connect(self, root), connect(self, root)]
        mirrors = [c.get(self, "l") for c in connections]
        for mirror in mirrors:
            self.assertIsInstance(mirror, LiveListMirror)
        logs = [recordChanges(m) for m in mirrors]

        mutateList(live)
        for c in connections:
            c.pump.flush()

        expected = [
            ("observe_insert", (1, 2, {"id": 3})),
            ("observe_insert", (2, 0, {"id": 0})),
            ("observe_replace", (3, 1, {"id": 1, "done": True})),
            ("observe_remove", (4, 3)),
            ("observe_reset", (5, ["x", "y"])),
        ]
        for mirror, log in zip(mirrors, logs, strict=True):
            self.assertEqual(log, expected)
            self.assertEqual(mirror.value, ["x", "y"])
            self.assertEqual(mirror.seq, 5)

    def test_lateObserverStartsAtCurrentSeq(self) -> None:
        """
        An observer that subscribes after some changes gets the current state
        and seq, then follows on from there without a gap.
        """
        live = LiveDict()
        root = LiveRoot(d=live)
        live.set("a", 1)
        live.set("b", 2)
        connection = connect(self, root)
        mirror = connection.get(self, "d")
        self.assertEqual((mirror.seq, mirror.value), (2, {"a": 1, "b": 2}))
        live.delete("a")
        connection.pump.flush()
        self.assertEqual((mirror.seq, mirror.value), (3, {"b": 2}))
        self.assertFalse(mirror.missed)

    def test_stateFormat(self) -> None:
        """
        The subscription state is C{{"seq": seq, "value": copy}}: changing the
        copy does not change the live object.
        """
        live = LiveList([1, 2])
        live.append(3)
        state = live.getStateToCacheAndObserveFor(
            None, cast(pb.RemoteCacheObserver, RecordingObserver())
        )
        self.assertEqual(state, {"seq": 1, "value": [1, 2, 3]})
        state["value"].append(4)
        self.assertEqual(live.snapshot(), [1, 2, 3])

    def test_equalValueSendsNothing(self) -> None:
        """
        A mutation that leaves the content equal (same values of the same
        types) sends no delta and keeps seq; a change of type only (1 to
        True) is a change.
        """
        live = LiveDict({"a": 1, "b": [1, {"x": 2}]})
        observer = RecordingObserver()
        observeWith(live, observer)
        live.set("a", 1)
        live.set("b", [1, {"x": 2}])
        live.update({"a": 1})
        live.reset({"a": 1, "b": [1, {"x": 2}]})
        self.assertEqual((observer.calls, live.seq), ([], 0))

        live.update({"a": 1, "c": 3})
        live.set("a", True)
        self.assertEqual(
            observer.calls,
            [("observe_update", (1, {"c": 3})), ("observe_set", (2, "a", True))],
        )

        items = LiveList(["x", "y"])
        listObserver = RecordingObserver()
        observeWith(items, listObserver)
        items.replace(0, "x")
        items.reset(["x", "y"])
        self.assertEqual((listObserver.calls, items.seq), ([], 0))

    def test_equalValueSendsNothingOnTheWire(self) -> None:
        """
        Setting an equal value writes no bytes to the observer's connection.
        """
        live = LiveDict({"a": 1})
        connection = connect(self, LiveRoot(d=live))
        mirror = connection.get(self, "d")
        live.set("a", 1)
        self.assertFalse(connection.pump.flush())
        live.set("a", 2)
        self.assertTrue(connection.pump.flush())
        self.assertEqual(mirror.value, {"a": 2})

    def test_typeTags(self) -> None:
        """
        Live objects travel under C{pb.live.LiveDict}/C{pb.live.LiveList},
        subclasses too, and the default registry maps those to the mirrors.
        """

        class Scores(LiveDict):
            pass

        self.assertEqual(LiveDict().getTypeToCopyFor(None), b"pb.live.LiveDict")
        self.assertEqual(Scores().getTypeToCopyFor(None), b"pb.live.LiveDict")
        self.assertEqual(LiveList().getTypeToCopyFor(None), b"pb.live.LiveList")
        self.assertEqual(DEFAULT_REGISTRY.lookup(b"pb.live.LiveDict"), ("class", LiveDictMirror))
        self.assertEqual(DEFAULT_REGISTRY.lookup(b"pb.live.LiveList"), ("class", LiveListMirror))
        self.assertEqual(pb.jelly.qual(LiveDict), "pb.live.LiveDict")
        self.assertEqual(pb.jelly.qual(LiveList), "pb.live.LiveList")

    def test_jellyOutsideBroker(self) -> None:
        """
        Serialized without a broker (no observer possible), a live object is
        a plain copy of its state under its type tag.
        """
        live = LiveDict({"a": 1})
        live.set("a", 2)
        copied = pb.jelly.unjelly(
            pb.jelly.jelly(live), registry=pb.TypeRegistry(inherit=None, allowGeneric=True)
        )
        self.assertEqual(copied, pb.GenericCopy("pb.live.LiveDict", {"seq": 1, "value": {"a": 2}}))
        self.assertEqual(live.observers, frozenset())

    def test_listIndexes(self) -> None:
        """
        L{LiveList} resolves negative indexes, refuses ones beyond either end
        (where C{list.insert} would clamp) without sending anything, and
        C{remove} returns the removed item.
        """
        live = LiveList(["a", "b", "c"])
        observer = RecordingObserver()
        observeWith(live, observer)
        self.assertRaises(IndexError, live.insert, 4, "x")
        self.assertRaises(IndexError, live.insert, -4, "x")
        self.assertRaises(IndexError, live.replace, 3, "x")
        self.assertRaises(IndexError, live.remove, -4)
        self.assertRaises(TypeError, live.remove, True)
        self.assertEqual(observer.calls, [])
        self.assertEqual(live.remove(-1), "c")
        live.insert(-1, "x")
        live.replace(-1, "B")
        self.assertEqual(live.snapshot(), ["a", "x", "B"])
        self.assertEqual(
            observer.calls,
            [
                ("observe_remove", (1, 2)),
                ("observe_insert", (2, 1, "x")),
                ("observe_replace", (3, 2, "B")),
            ],
        )

    def test_dictReadAccess(self) -> None:
        """
        L{LiveDict} reads like a mapping, and C{delete} of a missing key
        raises C{KeyError} without sending anything.
        """
        live = LiveDict({"a": 1, "b": 2})
        observer = RecordingObserver()
        observeWith(live, observer)
        self.assertEqual(live["a"], 1)
        self.assertEqual(live.get("c", 3), 3)
        self.assertEqual(sorted(live.keys()), ["a", "b"])
        self.assertEqual(sorted(live.items()), [("a", 1), ("b", 2)])
        self.assertEqual(len(live), 2)
        self.assertIn("a", live)
        self.assertNotIn("c", live)
        self.assertRaises(KeyError, live.delete, "c")
        self.assertEqual((observer.calls, live.seq), ([], 0))
        snapshot = live.snapshot()
        snapshot["c"] = 3
        self.assertNotIn("c", live)


# Values PB carries that compare equal after a round trip.
pbValues = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)
dictKeys = st.sampled_from(["a", "b", "c", "d"])
dictOps = st.lists(
    st.one_of(
        st.tuples(st.just("set"), dictKeys, pbValues),
        st.tuples(st.just("update"), st.dictionaries(dictKeys, pbValues, max_size=3)),
        st.tuples(st.just("delete"), dictKeys),
        st.tuples(st.just("reset"), st.dictionaries(dictKeys, pbValues, max_size=4)),
    ),
    max_size=12,
)
listIndexes = st.integers(-5, 5)
listOps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), pbValues),
        st.tuples(st.just("insert"), listIndexes, pbValues),
        st.tuples(st.just("replace"), listIndexes, pbValues),
        st.tuples(st.just("remove"), listIndexes),
        st.tuples(st.just("reset"), st.lists(pbValues, max_size=4)),
    ),
    max_size=12,
)


def applyDictOp(live: LiveDict, op: tuple[Any, ...]) -> None:
    """
    Apply a generated operation, checking that a missing key is refused.
    """
    name = op[0]
    if name == "delete" and op[1] not in live:
        try:
            live.delete(op[1])
        except KeyError:
            return
        raise AssertionError("delete of a missing key did not raise KeyError")
    getattr(live, name)(*op[1:])


def applyListOp(live: LiveList, op: tuple[Any, ...]) -> None:
    """
    Apply a generated operation, checking that out-of-range indexes are
    refused exactly when Python's indexing would refuse them.
    """
    name = op[0]
    if name in ("insert", "replace", "remove"):
        size = len(live) + (1 if name == "insert" else 0)
        index = op[1]
        if not -len(live) <= index < size:
            before = live.snapshot()
            try:
                getattr(live, name)(*op[1:])
            except IndexError:
                assert live.snapshot() == before
                return
            raise AssertionError(f"{name} at {index} did not raise IndexError")
    getattr(live, name)(*op[1:])


class RandomMutationTests(SynchronousTestCase):
    """
    Whatever the sequence of mutations, the deltas rebuild the server's
    content, both through L{applyDelta} and through real brokers.
    """

    def assertDeltasRebuild(
        self,
        live: LiveDict | LiveList,
        ops: list[Any],
        applyOp: Callable[[Any, tuple[Any, ...]], None],
    ) -> None:
        """
        Observe C{live} directly and through a mirror across a real connection,
        apply each of C{ops} to it with C{applyOp}, and check that replaying the
        recorded deltas with L{applyDelta} on the subscription state, and the
        mirror, both equal the server's snapshot, and that the seqs are
        consecutive.
        """
        observer = RecordingObserver()
        state = observeWith(live, observer)
        connection = connect(self, LiveRoot(live=live))
        mirror = connection.get(self, "live")
        for op in ops:
            applyOp(live, op)
        connection.pump.flush()

        replayed = state["value"]
        for method, args in observer.calls:
            replayed = applyDelta(replayed, method, args)
        self.assertEqual(replayed, live.snapshot())
        self.assertEqual([args[0] for _, args in observer.calls], list(range(1, live.seq + 1)))
        self.assertEqual(mirror.value, live.snapshot())
        self.assertEqual(mirror.seq, live.seq)
        self.assertFalse(mirror.missed)

    @settings(max_examples=60, deadline=None)
    @given(initial=st.dictionaries(dictKeys, pbValues, max_size=4), ops=dictOps)
    def test_dictMirrorMatchesServer(self, initial: dict[str, Any], ops: list[Any]) -> None:
        """
        After random dict mutations, replaying the recorded deltas with
        L{applyDelta} on the subscription state, and a mirror across a real
        connection, both equal the server's snapshot; seqs are consecutive.
        """
        self.assertDeltasRebuild(LiveDict(initial), ops, applyDictOp)

    @settings(max_examples=60, deadline=None)
    @given(initial=st.lists(pbValues, max_size=4), ops=listOps)
    def test_listMirrorMatchesServer(self, initial: list[Any], ops: list[Any]) -> None:
        """
        After random list mutations, replaying the recorded deltas with
        L{applyDelta}, and a mirror across a real connection, both equal the
        server's snapshot; seqs are consecutive.
        """
        self.assertDeltasRebuild(LiveList(initial), ops, applyListOp)


class FailingDeleteMirror(LiveDictMirror):
    """
    A client mirror whose C{observe_delete} is broken.
    """

    def observe_delete(self, seq: int, key: Any) -> None:
        raise RuntimeError("this client cannot delete")


class ObserverLifecycleTests(SynchronousTestCase):
    """
    Observers come and go without disturbing each other.
    """

    def test_droppedConnectionRemovesObserver(self) -> None:
        """
        When an observer's connection drops, even with deltas in flight, it
        is removed (the broker calls C{stoppedObserving}), no Deferred is left
        failing unhandled, and the other observer keeps receiving deltas.
        """
        live = LiveDict()
        root = LiveRoot(d=live)
        staying, leaving = connect(self, root), connect(self, root)
        stayingMirror = staying.get(self, "d")
        leaving.get(self, "d")
        self.assertEqual(len(live.observers), 2)

        live.set("a", 1)  # in flight to both when one connection drops
        leaving.drop()
        self.assertTrue(leaving.server.disconnected)
        self.assertEqual([o.broker for o in live.observers], [staying.server])

        live.set("b", 2)
        staying.pump.flush()
        gc.collect()
        self.assertEqual(stayingMirror.value, {"a": 1, "b": 2})
        self.assertEqual(stayingMirror.seq, 2)
        self.assertFalse(stayingMirror.missed)

    def test_failedDeltaDropsOnlyThatObserver(self) -> None:
        """
        A delta whose call fails on one client is logged and drops that
        observer; the other client still gets that delta and later ones.
        """
        live = LiveDict({"a": 1})
        root = LiveRoot(d=live)
        registry = pb.TypeRegistry()
        registry.setUnjellyableForClass("pb.live.LiveDict", FailingDeleteMirror)
        broken = connect(self, root, pb.PBClientFactory(security=registry, clock=Clock()))
        good = connect(self, root)
        brokenMirror = broken.get(self, "d")
        goodMirror = good.get(self, "d")
        self.assertIsInstance(brokenMirror, FailingDeleteMirror)

        live.delete("a")
        broken.pump.flush()
        self.assertEqual([o.broker for o in live.observers], [good.server])
        logged = self.flushLoggedErrors(RuntimeError)
        # The client logs its RuntimeError, the server the RemoteError it got back.
        self.assertEqual(
            sorted(failure.check(pb.RemoteError) is not None for failure in logged),
            [False, True],
        )

        live.set("b", 2)
        good.pump.flush()
        broken.pump.flush()
        self.assertEqual((goodMirror.value, goodMirror.seq), ({"b": 2}, 2))
        self.assertEqual(brokenMirror.seq, 0)

    def test_unsendableValueDropsObservers(self) -> None:
        """
        A value PB cannot send fails the delta for every observer: each
        failure is logged and drops its observer, and the mutation itself
        does not raise.
        """
        live = LiveDict()
        root = LiveRoot(d=live)
        connections = [connect(self, root), connect(self, root)]
        mirrors = [c.get(self, "d") for c in connections]
        live.set("bad", object())
        for c in connections:
            c.pump.flush()
        self.assertEqual(live.observers, frozenset())
        self.assertEqual(len(self.flushLoggedErrors(pb.UnsafeValue)), 2)
        self.assertEqual([(m.seq, m.value) for m in mirrors], [(0, {}), (0, {})])

    def test_releasedMirrorRemovesObserver(self) -> None:
        """
        When the client lets go of every copy of the mirror, the server stops
        observing, and later changes send nothing on that connection.
        """
        live = LiveList()
        connection = connect(self, LiveRoot(l=live))
        mirror = connection.get(self, "l")
        again = connection.get(self, "l")
        self.assertIs(mirror.__dict__, again.__dict__)
        self.assertEqual(len(live.observers), 1)

        del mirror
        gc.collect()
        connection.pump.flush()
        self.assertEqual(len(live.observers), 1, "one copy is still held")

        del again
        gc.collect()
        connection.pump.flush()
        self.assertEqual(live.observers, frozenset())
        live.append("x")
        self.assertFalse(connection.pump.flush())

    def test_borgCopiesShareCallbacks(self) -> None:
        """
        Copies of one cache share C{seq}, C{value} and callbacks; a failing
        callback is logged and does not stop the others; C{removeOnChange}
        stops a callback.
        """
        live = LiveDict()
        connection = connect(self, LiveRoot(d=live))
        first = connection.get(self, "d")
        second = connection.get(self, "d")
        self.assertIsNot(first, second)
        self.assertEqual(first, second)

        def broken(mirror: Any, method: str, args: tuple[Any, ...]) -> None:
            raise ZeroDivisionError()

        stopped: list[str] = []

        def removed(mirror: Any, method: str, args: tuple[Any, ...]) -> None:
            stopped.append(method)

        first.onChange(broken)
        events = recordChanges(second)
        second.onChange(removed)
        first.removeOnChange(removed)

        live.set("a", 1)
        connection.pump.flush()
        self.assertEqual(events, [("observe_set", (1, "a", 1))])
        self.assertEqual(stopped, [])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual((first.seq, first.value), (1, {"a": 1}))


class GapDetectionTests(SynchronousTestCase):
    """
    Mirrors notice deltas that do not follow on from what they have.
    """

    def test_gapSetsMissed(self) -> None:
        """
        A delta whose seq is not the mirror's seq + 1 sets C{missed}, is still
        applied, and is reported to callbacks.
        """
        live = LiveDict()
        connection = connect(self, LiveRoot(d=live))
        mirror = connection.get(self, "d")
        events = recordChanges(mirror)
        (observer,) = live.observers

        live.set("a", 1)
        live.stoppedObserving(None, observer)
        live.set("b", 2)  # this one is missed
        live.getStateToCacheAndObserveFor(None, observer)
        connection.pump.flush()
        self.assertFalse(mirror.missed)

        live.set("c", 3)
        connection.pump.flush()
        self.assertTrue(mirror.missed)
        self.assertEqual(mirror.seq, 3)
        self.assertEqual(mirror.value, {"a": 1, "c": 3})
        self.assertEqual(events[-1], ("observe_set", (3, "c", 3)))

    def test_unappliableDeltaSetsMissed(self) -> None:
        """
        A delta the mirror cannot apply (here: removing beyond the end) sets
        C{missed} and is reported instead of failing the server's call.
        """
        live = LiveList(["a"])
        connection = connect(self, LiveRoot(l=live))
        mirror = connection.get(self, "l")
        events = recordChanges(mirror)
        mirror.value.clear()  # the mirror drifted

        live.remove(0)
        connection.pump.flush()
        self.assertTrue(mirror.missed)
        self.assertEqual(mirror.seq, 1)
        self.assertEqual(events, [("observe_remove", (1, 0))])
        self.assertEqual(len(live.observers), 1)


class ApplyDeltaTests(SynchronousTestCase):
    """
    L{applyDelta} applies the seven deltas and refuses anything else.
    """

    def test_eachDelta(self) -> None:
        """
        Each delta changes the value as documented, in place.
        """
        d: dict[str, Any] = {"a": 1}
        self.assertIs(applyDelta(d, "observe_set", (1, "b", 2)), d)
        applyDelta(d, "observe_update", (2, {"a": 3, "c": 4}))
        applyDelta(d, "observe_delete", [3, "b"])
        self.assertEqual(d, {"a": 3, "c": 4})
        self.assertIs(applyDelta(d, "observe_reset", (4, {"z": 0})), d)
        self.assertEqual(d, {"z": 0})

        items: list[Any] = ["a"]
        self.assertIs(applyDelta(items, "observe_insert", (1, 1, "b")), items)
        applyDelta(items, "observe_insert", (2, 0, "start"))
        applyDelta(items, "observe_replace", (3, 2, "B"))
        applyDelta(items, "observe_remove", (4, 1))
        self.assertEqual(items, ["start", "B"])
        self.assertIs(applyDelta(items, "observe_reset", (5, [1])), items)
        self.assertEqual(items, [1])
        self.assertEqual(
            DELTA_METHODS,
            {
                "observe_set",
                "observe_update",
                "observe_delete",
                "observe_insert",
                "observe_replace",
                "observe_remove",
                "observe_reset",
            },
        )

    def test_errors(self) -> None:
        """
        Unknown methods, methods for the other kind of value, malformed
        arguments and impossible changes raise C{ValueError}, leaving the
        value as it was.
        """
        bad: list[tuple[Any, Any, Any]] = [
            ({}, "observe_nothing", (1,)),
            ({}, "set", (1, "a", 1)),
            ({}, None, (1,)),
            ({}, "observe_set", (1, "a")),
            ({}, "observe_set", (1, "a", 1, 2)),
            ({}, "observe_set", ()),
            ({}, "observe_set", ("1", "a", 1)),
            ({}, "observe_set", (True, "a", 1)),
            ({}, "observe_set", (1, ["unhashable"], 1)),
            ({}, "observe_set", {"seq": 1}),
            ({}, "observe_update", (1, [("a", 1)])),
            ({}, "observe_delete", (1, "missing")),
            ({}, "observe_insert", (1, 0, "x")),
            ({}, "observe_reset", (1, [])),
            ([], "observe_set", (1, "a", 1)),
            ([], "observe_insert", (1, 1, "x")),
            ([], "observe_insert", (1, -1, "x")),
            ([], "observe_insert", (1, True, "x")),
            ([], "observe_insert", (1, "0", "x")),
            (["a"], "observe_replace", (1, 1, "x")),
            (["a"], "observe_remove", (1, -1)),
            (["a"], "observe_remove", (1,)),
            ([], "observe_reset", (1, {})),
            ((), "observe_reset", (1, ())),
        ]
        for value, method, args in bad:
            before = copy.deepcopy(value)
            with self.assertRaises(ValueError, msg=f"{method}{args!r} on {value!r}"):
                applyDelta(value, method, args)
            self.assertEqual(value, before)


class TwistedLiveDict(twistedPB.RemoteCache):
    """
    How a Twisted PB client mirrors a L{LiveDict}: its own RemoteCache class
    with the four dict deltas.
    """

    def setCopyableState(self, state: dict[str, Any]) -> None:
        self.seq = state["seq"]
        self.value = state["value"]
        self.deltas: list[tuple[str, tuple[Any, ...]]] = []

    def _delta(self, method: str, args: tuple[Any, ...]) -> None:
        self.deltas.append((method, args))
        self.seq = args[0]
        self.value = applyDelta(self.value, method, args)

    def observe_set(self, *args: Any) -> None:
        self._delta("observe_set", args)

    def observe_update(self, *args: Any) -> None:
        self._delta("observe_update", args)

    def observe_delete(self, *args: Any) -> None:
        self._delta("observe_delete", args)

    def observe_reset(self, *args: Any) -> None:
        self._delta("observe_reset", args)


class InteropTests(SynchronousTestCase):
    """
    Clients that do not use L{LiveDictMirror} get the same deltas.
    """

    def registerWithTwisted(self, tag: bytes, cls: type) -> None:
        """
        Register C{cls} for C{tag} in Twisted's global jelly tables, undone
        after the test.
        """
        registry = twistedJelly.unjellyableRegistry
        allowed = twistedJelly.globalSecurity.allowedTypes
        previous = (registry.get(tag), allowed.get(tag))

        def restore() -> None:
            for table, old in ((registry, previous[0]), (allowed, previous[1])):
                if old is None:
                    table.pop(tag, None)
                else:
                    table[tag] = old

        self.addCleanup(restore)
        twistedJelly.setUnjellyableForClass(tag, cls)

    def test_twistedClient(self) -> None:
        """
        A Twisted PB client with its own RemoteCache class registered for
        C{pb.live.LiveDict} gets the state and every delta, and releasing its
        copy stops the server observing.
        """
        self.registerWithTwisted(b"pb.live.LiveDict", TwistedLiveDict)
        live = LiveDict({"a": 1})
        connection = connect(self, LiveRoot(d=live), twistedPB.PBClientFactory())
        mirror = connection.get(self, "d")
        self.assertIsInstance(mirror, TwistedLiveDict)
        self.assertEqual((mirror.seq, mirror.value), (0, {"a": 1}))

        mutateDict(live)
        connection.pump.flush()
        self.assertEqual(
            [method for method, _ in mirror.deltas],
            ["observe_set", "observe_update", "observe_delete", "observe_set", "observe_reset"],
        )
        self.assertEqual([args[0] for _, args in mirror.deltas], [1, 2, 3, 4, 5])
        self.assertEqual(mirror.value, live.snapshot())
        self.assertEqual(len(live.observers), 1)

        del mirror
        gc.collect()
        connection.pump.flush()
        self.assertEqual(live.observers, frozenset())

    def test_genericCache(self) -> None:
        """
        A broker whose registry knows no live classes but allows generic
        holders gets L{pb.GenericRemoteCache}s; their listener events, applied
        with L{applyDelta} to the initial C{state["value"]}, reproduce the
        server's content.
        """
        live = LiveDict({"a": 1})
        items = LiveList(["x"])
        registry = pb.TypeRegistry(allowGeneric=True, inherit=None)
        connection = connect(
            self,
            LiveRoot(d=live, l=items),
            pb.PBClientFactory(security=registry, clock=Clock()),
        )
        caches = [connection.get(self, "d"), connection.get(self, "l")]
        values = []
        for cache, typeName in zip(caches, ["pb.live.LiveDict", "pb.live.LiveList"], strict=True):
            self.assertIsInstance(cache, pb.GenericRemoteCache)
            self.assertEqual(cache.typeName, typeName)
            self.assertEqual(cache.state["seq"], 0)
            value = cache.state["value"]
            values.append(value)

            def listener(
                method: str, args: tuple[Any, ...], kw: dict[str, Any], value: Any = value
            ) -> None:
                self.assertEqual(kw, {})
                applyDelta(value, method, args)

            cache.addListener(listener)

        mutateDict(live)
        mutateList(items)
        items.append("z")
        connection.pump.flush()
        self.assertEqual(values, [live.snapshot(), items.snapshot()])
        self.assertEqual(values[1], ["x", "y", "z"])
