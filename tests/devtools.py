"""A headless Chromium driven over its DevTools protocol, for checks that wait on the page in
real time. ``--dump-dom --virtual-time-budget`` lets virtual time run ahead of the media
pipeline, which decodes on its own threads: on a loaded machine the budget ran out before an
audio element had read its header. Here the page's own promise is awaited, with a wall-clock
limit, and its value comes back as JSON."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect


class PageError(RuntimeError):
    """The page did not load, or its script threw or ran past its limit."""


class Chromium:
    def __init__(self, exe: str, profile: Path):
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                exe,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--mute-audio",
                "--remote-debugging-port=0",  # a free port, written to DevToolsActivePort
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise PageError(f"Chromium did not open its DevTools port (exit {self.proc.returncode})")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        self._id = 0

    def _page_socket(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=30) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        if not pages:
            raise PageError("Chromium has no page open")
        return pages[0]["webSocketDebuggerUrl"]

    def evaluate(self, url: str, expression: str, timeout_s: float = 120) -> object:
        """Open ``url``, wait for its load event, then evaluate ``expression`` (a promise is
        awaited) and return its value; all within ``timeout_s`` seconds of wall-clock time."""
        deadline = time.monotonic() + timeout_s
        with connect(self._page_socket(), max_size=None, open_timeout=30) as ws:

            def call(method: str, **params) -> dict:
                self._id += 1
                ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise PageError(f"{method} did not answer within {timeout_s:.0f} s")
                    msg = json.loads(ws.recv(timeout=left))
                    if msg.get("method") == "Page.loadEventFired":
                        loaded.append(True)
                    if msg.get("id") == self._id:
                        if "error" in msg:
                            raise PageError(f"{method}: {msg['error'].get('message')}")
                        return msg["result"]

            loaded: list[bool] = []
            call("Page.enable")
            nav = call("Page.navigate", url=url)
            if nav.get("errorText"):
                raise PageError(f"{url} did not open: {nav['errorText']}")
            while not loaded:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PageError(f"{url} did not finish loading within {timeout_s:.0f} s")
                if json.loads(ws.recv(timeout=left)).get("method") == "Page.loadEventFired":
                    loaded.append(True)
            out = call(
                "Runtime.evaluate",
                expression=expression,
                awaitPromise=True,
                returnByValue=True,
            )
            if "exceptionDetails" in out:
                raise PageError(f"the page's script threw: {out['exceptionDetails'].get('text')}")
            return out["result"].get("value")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
