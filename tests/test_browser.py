"""
The dashboard (C{static/}) and its client library in a real browser.

Headless Chromium (Debian's C{chromium}, driven by the Python C{playwright}
package with the system executable; no browser download) loads the dashboard
from a real gateway in front of a real broker, each a C{pb-gateway}
subprocess on 127.0.0.1, and is used the way a person would: log in, call
methods, read results and errors, watch a live object's charts move, chat
between two users, and ride out a broker restart and a gateway restart.  The page must log no
console errors.

Screenshots of the dashboard with live data land in C{test-output/} at the
top of the checkout.  Without Chromium (C{/usr/bin/chromium}, or the
executable C{PB_CHROMIUM} names) the tests skip, except under CI (C{CI} set),
where they fail: C{bash .ci/test} installs it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("PB_CHROMIUM", "/usr/bin/chromium"))
OUTPUT = REPO / "test-output"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}
# What Chromium itself logs while the gateway is down and the page retries.
SOCKET_REFUSED = re.compile(r"^WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws' failed")


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[test]'"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: apt-get install -y chromium (bash .ci/test does it)"
    return None


def _freePort() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _waitFor(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Process:
    """
    One C{pb-gateway} subcommand running in the background, its output in a
    log file (printed when a test fails).
    """

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.args = args
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", *self.args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
            )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def checkAlive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log.read_text()}")


class Deployment:
    """
    A broker and a gateway in front of it, on fixed free ports so that each
    can be restarted where the browser expects it.
    """

    def __init__(self, folder: Path) -> None:
        self.pbPort = _freePort()
        self.httpPort = _freePort()
        self.url = f"http://127.0.0.1:{self.httpPort}/"
        self.broker = Process(
            "broker", ["broker", "--pb", f"tcp:{self.pbPort}:interface=127.0.0.1"],
            folder / "broker.log",
        )
        self.gateway = Process(
            "gateway",
            ["gateway", "--broker", f"tcp:host=127.0.0.1:port={self.pbPort}",
             "--http", f"tcp:{self.httpPort}:interface=127.0.0.1"],
            folder / "gateway.log",
        )

    def startBroker(self) -> None:
        self.broker.start()

        def listening() -> bool:
            self.broker.checkAlive()
            try:
                socket.create_connection(("127.0.0.1", self.pbPort), 0.5).close()
            except OSError:
                return False
            return True

        _waitFor(listening, "the broker to listen")

    def startGateway(self) -> None:
        self.gateway.start()

        def healthy() -> bool:
            self.gateway.checkAlive()
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=0.5) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        _waitFor(healthy, "the gateway to answer")

    def stop(self) -> None:
        self.gateway.stop()
        self.broker.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.log.read_text() if p.log.exists() else ''}"
            for p in (self.broker, self.gateway)
        )


class Proxy:
    """
    A TCP relay in front of the gateway that can cut every connection at
    once, as a network drop would, while the gateway itself stays up.
    """

    def __init__(self, targetPort: int) -> None:
        self.targetPort = targetPort
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/"
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self.downUntil = 0.0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if time.monotonic() < self.downUntil:
                self._close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.targetPort))
            except OSError:
                self._close(client)
                continue
            with self.lock:
                self.connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self.lock:
                self.connections.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut(self, downFor: float) -> None:
        """
        Drop every open connection, and refuse new ones for C{downFor}
        seconds.
        """
        self.downUntil = time.monotonic() + downFor
        with self.lock:
            connections = list(self.connections)
        self._close(*connections)

    def close(self) -> None:
        self._close(self.server)
        self.cut(0)


def _deploy(folder: Path) -> Iterator[Deployment]:
    deployment = Deployment(folder)
    try:
        deployment.startBroker()
        deployment.startGateway()
        yield deployment
    except BaseException:
        print(deployment.logs())
        raise
    finally:
        deployment.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = _unavailable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests cannot run: {problem}", pytrace=False)
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def deployment(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """
    A broker and gateway shared by the tests that do not restart them.
    """
    yield from _deploy(tmp_path_factory.mktemp("deployment"))


class Dashboard:
    """
    A page showing the dashboard, and what a person does with it.
    """

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport=WIDE)
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.goto(url)
        self.expectState("connected")

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def close(self) -> None:
        self.context.close()

    def expectState(self, *states: str, timeout: float = 10_000) -> str:
        """
        Wait until the connection indicator shows one of C{states}.
        """
        indicator = self.page.locator("#connection")
        pattern = "|".join(f"^{state}$" for state in states)
        from playwright.sync_api import expect

        expect(indicator).to_have_attribute("data-state", re.compile(pattern), timeout=timeout)
        return str(indicator.get_attribute("data-state"))

    def logInWithKeyboard(self, username: str, password: str) -> None:
        self.page.locator("#username").focus()
        self.page.keyboard.type(username)
        self.page.keyboard.press("Tab")
        self.page.keyboard.type(password)
        self.page.keyboard.press("Enter")
        self.page.locator("#app").wait_for(state="visible")

    def logInAsGuest(self) -> None:
        self.page.get_by_role("button", name="Continue as guest").click()
        self.page.locator("#app").wait_for(state="visible")

    def logOut(self) -> None:
        self.page.get_by_role("button", name="Log out").click()
        self.page.locator("#login").wait_for(state="visible")

    def call(self, method: str, **arguments: str) -> Any:
        """
        Open a method's form, fill in its fields, call it; its output.
        """
        item = self.page.locator(f"li[data-method='{method}']")
        if item.locator("details").get_attribute("open") is None:
            item.locator("summary").click()
        for name, text in arguments.items():
            item.locator(f"#m-{method}-{name}").fill(text)
        output = item.locator("output.result")
        output.evaluate("output => output.replaceChildren()")
        item.get_by_role("button", name=f"Call {method}").click()
        output.locator("pre.value, .error-box").first.wait_for()
        return output

    def samples(self, panel: str, key: str) -> int:
        chart = self.page.locator(f"article[data-name='{panel}'] figure.chart[data-key='{key}']")
        return int(chart.get_attribute("data-samples") or 0)

    def waitForSamples(self, panel: str, key: str, atLeast: int, timeout: float = 10.0) -> None:
        _waitFor(lambda: self.samples(panel, key) >= atLeast,
                 f"{atLeast} samples of {panel}.{key}", timeout)

    def chat(self) -> Any:
        """
        The chat panel.
        """
        return self.page.locator("#chat")

    def joinChat(self) -> None:
        """
        Press the chat panel's Join with the keyboard; wait until in the room.
        """
        from playwright.sync_api import expect

        self.chat().get_by_role("button", name="Join", exact=True).focus()
        self.page.keyboard.press("Enter")
        expect(self.chat()).to_have_attribute("data-state", "in")

    def unexpectedErrors(self, allowed: re.Pattern[str] | None = None) -> list[str]:
        return [e for e in self.errors if allowed is None or not allowed.search(e)]


@pytest.fixture
def dashboard(browser: Any, deployment: Deployment) -> Iterator[Dashboard]:
    page = Dashboard(browser, deployment.url)
    yield page
    page.close()


# Before a screenshot: fold every method but the two math calls, scroll up.
_SHOW_MATH = """() => {
    for (const details of document.querySelectorAll("li.method details")) {
        details.open = ["add", "divide"].includes(details.closest("li").dataset.method);
    }
    document.querySelector(".explorer").scrollTop = 0;
    window.scrollTo(0, 0);
}"""


def _screenshot(page: Any, name: str) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / name
    page.screenshot(path=str(path), full_page=False)
    print(f"screenshot: {path}")
    return path


def test_logInCallAndSeeAnError(dashboard: Dashboard) -> None:
    """
    A demo user logs in with the keyboard alone; the explorer lists the
    session's methods; a call shows its result, a failing call its error
    (message, remote type, code), both go to the history; the service's
    calls to the page (the demo chat's C{receive}) are answered and shown,
    and the chat panel follows the C{joinChat} made in the explorer; a
    reload rejoins the session and the chat room; logging out brings the
    login form back.
    Nothing is logged to the console.
    """
    from playwright.sync_api import expect

    page = dashboard.page
    dashboard.logInWithKeyboard("alice", "password")
    expect(page.locator("#who-name")).to_have_text("alice")
    expect(page.locator("li[data-method='getMessage']")).to_be_visible()

    result = dashboard.call("add", a="5", b="3")
    expect(result.locator("pre.value")).to_have_text("8")

    error = dashboard.call("divide", a="1", b="0")
    expect(error.locator(".error-box")).to_contain_text("Division by zero")
    expect(error.locator(".error-box")).to_contain_text("builtins.ValueError")
    expect(error.locator(".error-box")).to_contain_text("-32011")

    greeting = dashboard.call("getMessage")
    expect(greeting.locator("pre.value")).to_have_text('"Hello, alice!"')

    history = page.locator("#history li:not(.incoming)")
    expect(history).to_have_count(3)
    expect(history.nth(1)).to_contain_text("divide(1, 0)")
    expect(history.nth(1)).to_have_class(re.compile("failed"))
    expect(history.nth(2)).to_contain_text("add(5, 3) → 8")

    # The service calls the page back: the demo's chat room sends receive(sender, text).
    joined = dashboard.call("joinChat")
    expect(joined.locator("pre.value")).to_contain_text('"alice"')
    dashboard.call("say", text="hello from the browser")
    incoming = page.locator("#history li.incoming")
    expect(incoming.first).to_contain_text('receive("alice", "hello from the browser")')
    expect(incoming.nth(1)).to_contain_text('receive("*", "alice joined")')
    chat = page.locator("#chat")  # the panel follows a joinChat made in the explorer
    expect(chat).to_have_attribute("data-state", "in")
    expect(chat.locator(".message[data-sender='alice'] .text")).to_have_text(["hello from the browser"])

    page.reload()  # the tab keeps the session's token (not the password) and rejoins
    expect(page.locator("#who-name")).to_have_text("alice")
    dashboard.expectState("connected")
    expect(chat).to_have_attribute("data-state", "in")  # the tab was in the chat room
    expect(chat.locator(".member")).to_have_text(["alice (you)"])
    greeting = dashboard.call("getMessage")
    expect(greeting.locator("pre.value")).to_have_text('"Hello, alice!"')

    dashboard.logOut()
    expect(page.locator("#who")).to_be_hidden()
    dashboard.expectState("connected")
    assert dashboard.unexpectedErrors() == []


def test_liveObjectsReferencesAndScreenshots(dashboard: Dashboard) -> None:
    """
    Opening C{stats} shows a live panel whose charts gain a point per update
    and whose table flashes the cells that changed; the to-do C{board}
    shows tasks added through the explorer as they come; a reference
    (the counter) gets a panel to call it.  Screenshots with this live data
    are saved, wide and narrow.
    """
    from playwright.sync_api import expect

    page = dashboard.page
    dashboard.logInWithKeyboard("bob", "secret")

    dashboard.call("stats")
    stats = page.locator("article[data-name='stats']")
    expect(stats.locator("figure.chart[data-key='uptime_s']")).to_be_visible()
    before = dashboard.samples("stats", "uptime_s")
    dashboard.waitForSamples("stats", "uptime_s", before + 2)
    assert int(stats.get_attribute("data-seq") or 0) > 0
    expect(stats.locator("td.changed").first).to_be_attached()
    points = stats.locator("figure.chart[data-key='uptime_s'] polyline").get_attribute("points")
    assert points is not None and len(points.split()) >= 2

    dashboard.call("board")
    dashboard.call("addTask", text="Ship the dashboard")
    dashboard.call("addTask", text="Write the docs")
    board = page.locator("article[data-name='board']")
    expect(board.locator("tbody tr")).to_have_count(2)
    expect(board).to_contain_text("Ship the dashboard")
    dashboard.call("setDone", taskId="1")
    expect(board.locator("tbody tr[data-key='1'] td[data-column='done']")).to_have_text("true")

    dashboard.call("counter")
    counter = page.locator("article.ref").first
    counter.get_by_label("Method").fill("increment")
    counter.get_by_label("Arguments").fill("[2]")
    counter.get_by_role("button", name="Call").click()
    expect(counter.locator("pre.value")).to_have_text("2")

    dashboard.call("add", a="19", b="23")
    dashboard.call("divide", a="1", b="0")
    dashboard.waitForSamples("stats", "uptime_s", before + 8)
    page.evaluate(_SHOW_MATH)
    _screenshot(page, "dashboard.png")
    page.set_viewport_size(NARROW)
    page.locator("#live-title").scroll_into_view_if_needed()
    _screenshot(page, "dashboard-narrow.png")
    page.set_viewport_size(WIDE)

    stats.get_by_role("button", name="Close stats").click()
    expect(stats).to_have_count(0)
    dashboard.logOut()
    assert dashboard.unexpectedErrors() == []


def test_chatBetweenTwoUsers(browser: Any, deployment: Deployment) -> None:
    """
    Alice and Bob, each in a browser context of their own, join the demo's
    chat room from the chat panel with the keyboard and see who is in it.
    A message typed and sent with Enter reaches both pages (the sender's
    marked as its own); an empty input sends nothing; Bob answers with the
    Send button; a message the service refuses shows its error and keeps
    the text; Bob leaving shows "bob left" on Alice's page and takes him off
    her member list.  Neither page logs a console error.
    """
    from playwright.sync_api import expect

    alice = Dashboard(browser, deployment.url)
    bob = Dashboard(browser, deployment.url)
    try:
        alice.logInWithKeyboard("alice", "password")
        bob.logInWithKeyboard("bob", "secret")
        aliceChat, bobChat = alice.chat(), bob.chat()
        expect(aliceChat.locator("[data-chat='status']")).to_have_text("Not in the room")
        expect(aliceChat.get_by_label("Message", exact=True)).to_be_disabled()

        alice.joinChat()
        expect(aliceChat.locator(".member")).to_have_text(["alice (you)"])
        expect(aliceChat.get_by_label("Message", exact=True)).to_be_focused()
        bob.joinChat()
        expect(bobChat.locator(".member")).to_have_text(["alice", "bob (you)"])
        expect(aliceChat.locator(".member")).to_have_text(["alice (you)", "bob"])
        expect(aliceChat.locator("[data-chat='status']")).to_have_text("In the room · 2 members")

        send = aliceChat.get_by_role("button", name="Send")
        expect(send).to_be_disabled()
        alice.page.keyboard.press("Enter")  # nothing to send
        alice.page.keyboard.type("hello bob")
        alice.page.keyboard.press("Enter")
        expect(bobChat.locator(".message[data-sender='alice'] .text")).to_have_text(["hello bob"])
        expect(aliceChat.locator(".message.own .text")).to_have_text(["hello bob"])
        expect(aliceChat.get_by_label("Message", exact=True)).to_have_value("")

        bobChat.get_by_label("Message", exact=True).fill("hi alice")
        bobChat.get_by_role("button", name="Send").click()
        expect(aliceChat.locator(".message[data-sender='bob'] .text")).to_have_text(["hi alice"])

        bobChat.get_by_label("Message", exact=True).fill("x" * 201)
        bob.page.keyboard.press("Enter")
        error = bobChat.locator("[data-chat='error'] .error-box")
        expect(error).to_contain_text("Your message was not sent: a message is at most 200 characters")
        expect(bobChat.get_by_label("Message", exact=True)).to_have_value("x" * 201)

        bobChat.get_by_role("button", name="Leave").click()
        expect(bobChat.locator("[data-chat='status']")).to_have_text("Not in the room")
        expect(bobChat.get_by_role("button", name="Join", exact=True)).to_be_focused()
        expect(aliceChat.locator(".message.room").last).to_have_text(re.compile("bob left$"))
        expect(aliceChat.locator(".member")).to_have_text(["alice (you)"])
        expect(aliceChat.locator(".message .text")).to_have_text(
            ["alice joined", "bob joined", "hello bob", "hi alice", "bob left"])

        aliceChat.scroll_into_view_if_needed()
        _screenshot(alice.page, "dashboard-chat.png")
        alice.page.set_viewport_size(NARROW)
        aliceChat.scroll_into_view_if_needed()
        _screenshot(alice.page, "dashboard-chat-narrow.png")

        alice.logOut()
        bob.logOut()
        assert alice.unexpectedErrors() == []
        assert bob.unexpectedErrors() == []
    finally:
        alice.close()
        bob.close()


def test_socketDropMissesNoUpdate(browser: Any, deployment: Deployment) -> None:
    """
    When the connection drops while the gateway stays up, the client
    reconnects, rejoins its session with the token (no new login) and
    resubscribes from the last sequence number it saw: the gateway replays
    the deltas sent meanwhile, so the panel's sequence number still equals
    the one it opened at plus the deltas it applied, with no snapshot.
    """
    from playwright.sync_api import expect

    proxy = Proxy(deployment.httpPort)
    dashboard = Dashboard(browser, proxy.url)
    try:
        page = dashboard.page
        dashboard.logInWithKeyboard("alice", "password")
        dashboard.call("stats")
        dashboard.waitForSamples("stats", "uptime_s", 2)
        stats = page.locator("article[data-name='stats']")

        proxy.cut(downFor=2.5)  # the live object changes meanwhile (every second)
        dashboard.expectState("reconnecting")
        dropped = dashboard.samples("stats", "uptime_s")
        dashboard.expectState("connected")
        dashboard.waitForSamples("stats", "uptime_s", dropped + 2)

        opened = int(stats.get_attribute("data-opened-seq") or -1)
        deltas = int(stats.get_attribute("data-deltas") or -1)
        assert stats.get_attribute("data-snapshots") == "0"
        assert int(stats.get_attribute("data-seq") or 0) == opened + deltas
        expect(page.locator("#history li.note")).to_have_count(0)
        whoami = dashboard.call("whoami")
        expect(whoami.locator("pre.value")).to_have_text('"alice"')
        dashboard.logOut()
        assert dashboard.unexpectedErrors(allowed=SOCKET_REFUSED) == []
    finally:
        dashboard.close()
        proxy.close()


def test_restartBrokerThenGateway(browser: Any, tmp_path: Path) -> None:
    """
    A guest watching C{stats} and in the chat room sees the indicator go to
    "broker down" when the broker stops and back to connected when it
    returns: the client logged in again by itself, reopened the live object,
    whose chart moves on, and the page joined the chat room again.
    Restarting the gateway process drops the socket ("reconnecting"); the
    client reconnects, finds its token unknown to the new gateway, logs in
    again, updates resume and the page is back in the chat room, all
    without a reload.
    """
    from playwright.sync_api import expect

    deployment = Deployment(tmp_path)
    deployment.startBroker()
    deployment.startGateway()
    dashboard: Dashboard | None = None
    try:
        dashboard = Dashboard(browser, deployment.url)
        page = dashboard.page
        dashboard.logInAsGuest()
        expect(page.locator("#who-name")).to_have_text("guest")
        dashboard.call("stats")
        dashboard.waitForSamples("stats", "uptime_s", 2)
        dashboard.joinChat()
        chat = dashboard.chat()
        joined = chat.locator(".message.room", has_text=re.compile("joined$"))
        expect(joined).to_have_count(1)

        deployment.broker.stop()
        dashboard.expectState("broker-down")
        expect(page.locator("#history li.note").first).to_contain_text("broker connection lost")
        expect(chat.locator("[data-chat='status']")).to_have_text("Session lost; rejoining…")
        lost = dashboard.samples("stats", "uptime_s")
        deployment.startBroker()
        dashboard.expectState("connected", timeout=20_000)
        dashboard.waitForSamples("stats", "uptime_s", lost + 2)
        expect(page.locator("article[data-name='stats']")).not_to_have_class(re.compile("closed"))
        expect(joined).to_have_count(2)  # the new broker's room announced the page again
        expect(chat).to_have_attribute("data-state", "in")
        whoami = dashboard.call("whoami")
        expect(whoami.locator("pre.value")).to_have_text('"guest"')

        deployment.gateway.stop()
        dashboard.expectState("reconnecting")
        dropped = dashboard.samples("stats", "uptime_s")
        deployment.startGateway()
        dashboard.expectState("connected", timeout=20_000)
        dashboard.waitForSamples("stats", "uptime_s", dropped + 2)
        expect(page.locator("article[data-name='stats']")).not_to_have_class(re.compile("closed"))
        expect(page.locator("#history li.note").first).to_contain_text("Session renewed")
        expect(joined).to_have_count(3)
        expect(chat).to_have_attribute("data-state", "in")
        expect(chat.locator(".member")).to_have_count(1)
        whoami = dashboard.call("whoami")
        expect(whoami.locator("pre.value")).to_have_text('"guest"')

        dashboard.logOut()
        assert dashboard.unexpectedErrors(allowed=SOCKET_REFUSED) == []
    except BaseException:
        print(deployment.logs())
        raise
    finally:
        if dashboard is not None:
            dashboard.close()
        deployment.stop()
