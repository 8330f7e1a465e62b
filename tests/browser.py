"""A headless Chromium driven over the DevTools protocol through a pipe (stdlib only).

    with Chromium.launch() as browser:
        page = browser.open(path)            # loads file://path, waits for its load event
        page.evaluate("document.title")      # a JS expression's value
        page.screenshot(out_png)
        page.console_errors, page.requests   # what the page logged and asked the network for

`--remote-debugging-pipe`: Chromium reads protocol messages on fd 3 and writes them on fd 4,
each a JSON object ended by a NUL byte; no port, no websocket, nothing that reaches the network.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
TIMEOUT_S = 60.0  # one protocol answer; a cold Chromium on two busy cores takes seconds
VIEWPORT = (1280, 900)


def chromium_path() -> str | None:
    """The Chromium binary ($GPUFLEET_CHROMIUM, else the first one on PATH), or None."""
    explicit = os.environ.get("GPUFLEET_CHROMIUM")
    if explicit:
        return explicit
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class ProtocolError(RuntimeError):
    """Chromium answered a command with an error, died, or did not answer in time."""


@dataclass
class Page:
    """One tab, attached with a flat session: commands to it carry its session id."""

    browser: Chromium
    session: str
    url: str = ""
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JS expression (JSON-able); a thrown exception fails the test."""
        answer = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in answer:
            raise ProtocolError(f"{expression[:80]!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def hover(self, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            width, height = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def collect(self, event: dict[str, Any]) -> None:
        """Keep what the page logged as an error and every request it made."""
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.console_errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description")))
                                       for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console_errors.append(
                f"exception: {details.get('exception', {}).get('description') or details}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.console_errors.append(f"log: {params['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))


class Chromium:
    """A headless Chromium process and its protocol pipe (one browser, pages opened in turn)."""

    def __init__(self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int,
                 profile: tempfile.TemporaryDirectory[str]):
        self.process, self.to_browser, self.from_browser = process, to_browser, from_browser
        self.profile = profile
        self.buffer = b""
        self.next_id = 0
        self.pages: dict[str, Page] = {}  # session id -> page

    @classmethod
    def launch(cls, binary: str | None = None) -> Chromium:
        binary = binary or chromium_path()
        if binary is None:
            raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
        profile = tempfile.TemporaryDirectory(prefix="gpufleet-chromium-")
        browser_reads, we_write = os.pipe()
        we_read, browser_writes = os.pipe()
        args = [
            binary, "--headless=new", "--remote-debugging-pipe", "--disable-gpu",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={profile.name}", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox

        def onto_3_and_4() -> None:  # in the child: the pipe ends where Chromium looks for them
            low_r = fcntl.fcntl(browser_reads, fcntl.F_DUPFD, 10)
            low_w = fcntl.fcntl(browser_writes, fcntl.F_DUPFD, 10)
            os.dup2(low_r, 3)
            os.dup2(low_w, 4)

        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=onto_3_and_4,  # the tests start no threads before it
        )
        os.close(browser_reads)
        os.close(browser_writes)
        return cls(process, we_write, we_read, profile)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self.send("Browser.close", {}, timeout=10)
                self.process.wait(timeout=10)
        except (ProtocolError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            for fd in (self.to_browser, self.from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.profile.cleanup()

    # ------------------------------------------------------------ the protocol

    def send(self, method: str, params: dict[str, Any], *, session: str | None = None,
             timeout: float = TIMEOUT_S) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        answer = self._until(lambda m: m.get("id") == message["id"], timeout, method)
        if "error" in answer:
            raise ProtocolError(f"{method}: {answer['error']}")
        return dict(answer.get("result", {}))

    def wait_event(self, method: str, session: str, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        return self._until(
            lambda m: m.get("method") == method and m.get("sessionId") == session, timeout, method)

    def _until(self, wanted: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                message = json.loads(raw)
                page = self.pages.get(message.get("sessionId", ""))
                if page is not None and "method" in message:
                    page.collect(message)
                if wanted(message):
                    return dict(message)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"no answer to {what} within {timeout:.0f} s")
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if ready:
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    raise ProtocolError(f"chromium exited (status {self.process.poll()}) "
                                        f"waiting for {what}")
                self.buffer += chunk

    # ------------------------------------------------------------ pages

    def open(self, path: Path, viewport: tuple[int, int] = VIEWPORT) -> Page:
        """A fresh tab with console, log and network recorded from the start, then the page."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        page = Page(self, session)
        self.pages[session] = page
        for domain in ("Runtime", "Log", "Network", "Page"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride", width=viewport[0], height=viewport[1],
                  deviceScaleFactor=1, mobile=False)
        page.url = path.resolve().as_uri()
        page.send("Page.navigate", url=page.url)
        self.wait_event("Page.loadEventFired", session)
        page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        return page
