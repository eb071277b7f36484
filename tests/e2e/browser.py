"""A minimal headless-Chromium driver over the DevTools protocol on a pipe (stdlib only, no websocket client).

``--remote-debugging-pipe`` makes Chromium read null-terminated JSON commands from fd 3 and write replies and
events to fd 4; one page target is attached in flat mode and JavaScript is evaluated in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else shutil.which(explicit)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page. ``evaluate`` runs an (async) JS expression and returns its value."""

    def __init__(self, executable: str, width: int = 1600, height: int = 1000):
        self._profile = tempfile.mkdtemp(prefix="r3dp-chromium-")
        self._log = open(Path(self._profile) / "chromium.log", "wb")  # a pipe could fill up and block Chromium
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_fds():
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.process = subprocess.Popen(
            [executable, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--mute-audio",
             # no background connections: they are refused on machines without network and only add noise
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
             "--autoplay-policy=no-user-gesture-required", f"--window-size={width},{height}",
             f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            pass_fds=(3, 4), preexec_fn=wire_fds)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.command("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.command("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.command(f"{domain}.enable", session=True)

    def _read_message(self, timeout: float) -> dict:
        import select

        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError("timed out waiting for Chromium")
            ready, _, _ = select.select([self._from_child], [], [], remaining)
            if ready:
                block = os.read(self._from_child, 1 << 20)
                if not block:
                    log = (Path(self._profile) / "chromium.log").read_text(errors="replace")[-2000:]
                    raise BrowserError(f"Chromium exited: {log}")
                self._buffer += block
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def command(self, method: str, params: dict | None = None, session: bool = False, timeout: float = 60) -> dict:
        self._next_id += 1
        request = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            request["sessionId"] = self.session
        os.write(self._to_child, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_message(max(0.1, deadline - time.monotonic()))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str, timeout: float = 60):
        """Evaluate JS in the page (promises awaited); returns the JSON value or raises with the JS error."""
        result = self.command("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                   "returnByValue": True, "timeout": int(timeout * 1000)},
                              session=True, timeout=timeout + 5)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JS error: {text}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.command("Page.navigate", {"url": url}, session=True)

    def wait_for(self, expression: str, timeout: float = 60, poll: float = 0.25):
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression, timeout=10)
                if value:
                    return value
            except BrowserError as exc:
                last_error = exc
            time.sleep(poll)
        raise BrowserError(f"timed out waiting for {expression!r} (last error: {last_error})")

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.events:
            if event.get("method") == "Runtime.exceptionThrown":
                details = event["params"]["exceptionDetails"]
                errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error":
                errors.append(event["params"]["entry"].get("text", ""))
        return errors

    def screenshot(self, path: str | Path) -> None:
        import base64

        data = self.command("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.command("Browser.close", timeout=5)
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)
