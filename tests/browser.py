"""A page checked in a real browser: headless Chromium driven over the DevTools protocol.

:func:`check_page` opens a URL in a fresh profile, waits for the load event, lets every
``<img>`` decode, and returns the console errors, uncaught exceptions and each image's
decoded size. Nothing is downloaded: it drives the system's Chromium (Debian's ``chromium``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

IMAGES_DECODED = """
(async () => {
  const results = await Promise.all(Array.from(document.images).map(async (img) => {
    try {
      await img.decode();
      return {src: img.src.slice(0, 48), width: img.naturalWidth, height: img.naturalHeight};
    } catch (error) {
      return {src: img.src.slice(0, 48), width: 0, height: 0, error: String(error)};
    }
  }));
  return {title: document.title, images: results};
})()
"""


WAIT_FOR = """
(async () => {{
  for (let i = 0; i < 600; i++) {{
    if ({condition}) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }}
  return false;
}})()
"""


@dataclass(frozen=True)
class Typing:
    """Keys typed into the element ``selector`` (then Enter), and the page condition (a JS
    expression) awaited after them, e.g. that results have appeared."""

    selector: str
    text: str
    until: str


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@dataclass
class PageCheck:
    title: str
    images: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        return [image for image in self.images if not image["width"] or not image["height"]]


class _DevTools:
    """Requests and events over the browser's DevTools websocket (flat sessions)."""

    def __init__(self, url: str, timeout: float) -> None:
        import websocket  # websocket-client, a dev dependency

        self.socket = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.deadline = time.monotonic() + timeout
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self) -> dict[str, Any]:
        if time.monotonic() > self.deadline:
            raise TimeoutError("the browser did not answer in time")
        message = json.loads(self.socket.recv())
        if "method" in message:
            self.events.append(message)
        return message

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        request: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            request["sessionId"] = session
        self.socket.send(json.dumps(request))
        while True:
            message = self._receive()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def wait_for(self, method: str, session: str) -> None:
        seen = lambda e: e["method"] == method and e.get("sessionId") == session  # noqa: E731
        while not any(seen(event) for event in self.events):
            self._receive()

    def close_browser(self) -> None:
        """Ask the browser to quit (it may not answer before the connection drops)."""
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": "Browser.close"}))
        self.socket.close()


def _errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for event in events:
        params = event.get("params", {})
        if event["method"] == "Runtime.consoleAPICalled" and params.get("type") in (
            "error",
            "assert",
        ):
            errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif event["method"] == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"].get("text", "error"))
    return errors


def _devtools_url(process: subprocess.Popen, profile: Path, log: Path, timeout: float) -> str:
    """The browser's websocket, from the ``DevToolsActivePort`` file it writes when ready."""
    ready = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        lines = ready.read_text().splitlines() if ready.exists() else []
        if len(lines) >= 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"Chromium did not start:\n{tail}")


def _type(devtools: _DevTools, session: str, typing: Typing) -> None:
    """Focus the element, type the text as keyboard input, press Enter, await the condition."""

    def evaluate(expression: str) -> object:
        result = devtools.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session,
        )
        return result["result"].get("value")

    evaluate(f"document.querySelector({json.dumps(typing.selector)}).focus()")
    devtools.call("Input.insertText", {"text": typing.text}, session)
    for kind in ("keyDown", "keyUp"):
        enter = {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
        if kind == "keyDown":
            enter["text"] = "\r"  # the key's character: what submits the form
        devtools.call("Input.dispatchKeyEvent", enter, session)
    if not evaluate(WAIT_FOR.format(condition=typing.until)):
        raise TimeoutError(f"the page never reached: {typing.until}")


def check_page(
    url: str, chromium: str, timeout: float = 60.0, typing: Typing | None = None
) -> PageCheck:
    """Load ``url`` in headless Chromium (and type into it, when ``typing`` says what);
    report its console errors and decoded images."""
    with tempfile.TemporaryDirectory(prefix="twobranch-chromium-") as folder:
        profile, log = Path(folder) / "profile", Path(folder) / "chromium.log"
        with open(log, "w") as stderr:
            process = subprocess.Popen(
                [
                    chromium,
                    "--headless=new",
                    "--no-sandbox",  # the test may run as root, where the sandbox refuses to start
                    "--disable-gpu",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--remote-debugging-port=0",
                    "--remote-allow-origins=*",
                    f"--user-data-dir={profile}",
                    "about:blank",
                ],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            devtools = _DevTools(_devtools_url(process, profile, log, timeout), timeout)
            try:
                target = devtools.call("Target.createTarget", {"url": "about:blank"})
                session = devtools.call(
                    "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
                )["sessionId"]
                for domain in ("Runtime", "Log", "Page"):
                    devtools.call(f"{domain}.enable", session=session)
                devtools.call("Page.navigate", {"url": url}, session)
                devtools.wait_for("Page.loadEventFired", session)
                if typing is not None:
                    _type(devtools, session, typing)
                result = devtools.call(
                    "Runtime.evaluate",
                    {"expression": IMAGES_DECODED, "awaitPromise": True, "returnByValue": True},
                    session,
                )
                value = result["result"]["value"]
                return PageCheck(value["title"], value["images"], _errors(devtools.events))
            finally:
                devtools.close_browser()
        finally:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
