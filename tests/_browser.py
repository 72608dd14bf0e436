"""A headless Chromium driven over the Chrome DevTools Protocol through a pipe (no Python package needed).

Chromium started with ``--remote-debugging-pipe`` reads protocol messages (JSON, each ended by a NUL byte)
from its file descriptor 3 and writes replies and events to descriptor 4. :class:`Browser` opens one tab and
offers the few calls the book's tests need: open a page and wait until it has settled (MathJax typeset, images
loaded, widgets drawn), evaluate JavaScript, and take screenshots. Every request the page makes is recorded,
so a test can check that nothing was fetched from the network.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import pathlib
import select
import shutil
import subprocess
import time

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium() -> str:
    """Return a Chromium executable, installing Debian's ``chromium`` package with apt-get when missing."""
    exe = find_chromium()
    if exe:
        return exe
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError("Chromium is not installed and cannot be installed here (needs apt-get as root): "
                           "install the `chromium` package.")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:  # stale package lists: update them once and try again
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env, timeout=900)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("apt-get install chromium failed:\n" + (proc.stdout + proc.stderr)[-3000:])
    return exe


# Waits for what makes a book page final: MathJax's first typeset, every <img> decoded, and ipywidgets drawn
# from the saved state on pages that hold any (the HTML manager renders them after the load event).
_SETTLE = r"""
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const deadline = Date.now() + %(timeout_ms)d;
  if (document.querySelector('.math')) {
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() < deadline) await sleep(50);
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  }
  if (document.querySelector('script[type="application/vnd.jupyter.widget-view+json"]')) {
    while (!document.querySelector('.jupyter-widgets') && Date.now() < deadline) await sleep(50);
  }
  await Promise.all([...document.images].map(img => img.complete ? null :
      new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); })));
  return true;
})()
"""


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, executable: str, workdir: pathlib.Path, *, width: int = 1280, height: int = 1000):
        workdir.mkdir(parents=True, exist_ok=True)
        cmd_r, self._cmd_w = os.pipe()  # we write commands; Chromium reads them on its fd 3
        self._evt_r, evt_w = os.pipe()  # Chromium writes replies and events on its fd 4; we read them

        def child_fds():  # runs in the child before exec: put the pipe ends on fds 3 and 4
            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(evt_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [
            executable, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
            "--hide-scrollbars", "--mute-audio", "--force-color-profile=srgb",
            f"--user-data-dir={workdir / 'profile'}", f"--window-size={width},{height}", "about:blank",
        ]
        self._log = open(workdir / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            preexec_fn=child_fds, close_fds=True, pass_fds=(3, 4),  # closing the rest happens after child_fds
        )
        os.close(cmd_r)
        os.close(evt_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.call(f"{domain}.enable", session=self.session)
        self._window(width, height)
        self.width, self.height = width, height

    # --- protocol -------------------------------------------------------------------------------------

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._evt_r], [], [], left)
            if ready:
                chunk = os.read(self._evt_r, 1 << 20)
                if not chunk:
                    raise BrowserError("Chromium closed the DevTools pipe (did it crash? see chromium.log)")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, *, session: str | None = None, timeout: float = 60):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._cmd_w, data):]
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method:
                    return self._events.pop(i)
            message = self._read_message(deadline)
            if "method" in message:
                self._events.append(message)

    # --- page -----------------------------------------------------------------------------------------

    def evaluate(self, expression: str, *, timeout: float = 60):
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session, timeout=timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"JavaScript error: {details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")

    def open(self, url: str, *, timeout: float = 60) -> dict:
        """Load ``url`` and wait until it has settled; return the requests and errors seen while loading."""
        self._events.clear()
        self.call("Page.navigate", {"url": url}, session=self.session)
        self.wait_event("Page.loadEventFired", timeout=timeout)
        self.evaluate(_SETTLE % {"timeout_ms": int(timeout * 1000)}, timeout=timeout)
        time.sleep(0.2)  # let late events (requests, exceptions) arrive
        self.call("Runtime.evaluate", {"expression": "1"}, session=self.session)
        urls = {
            e["params"]["requestId"]: e["params"]["request"]["url"]
            for e in self._events
            if e["method"] == "Network.requestWillBeSent"
        }
        requests = [url for url in urls.values() if not url.startswith(("data:", "blob:", "about:"))]
        failed = [
            f'{urls.get(e["params"]["requestId"], "?")[:200]}: {e["params"]["errorText"]}'
            for e in self._events
            if e["method"] == "Network.loadingFailed"
        ]
        errors = [
            e["params"]["exceptionDetails"].get("exception", {}).get("description")
            or e["params"]["exceptionDetails"].get("text")
            for e in self._events
            if e["method"] == "Runtime.exceptionThrown"
        ]
        return {"requests": requests, "failed": failed, "errors": errors}

    def screenshot_bytes(self, clip: dict | None = None) -> bytes:
        """A PNG of the window as it is now (fast: no re-layout), or of its part ``clip`` (``x``, ``y``, ``width``,
        ``height`` in CSS pixels of the *page*, i.e. the window's coordinates plus the scroll offset): only that
        part is encoded, the same pixels as the window's crop."""
        params: dict = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", params, session=self.session)["data"])

    def screenshot(self, path: pathlib.Path, *, max_height: int = 30000, scale: float = 1.0) -> pathlib.Path:
        """The whole page (up to ``max_height`` CSS pixels), as PNG or, for a ``.jpg`` path, JPEG (faster), at
        ``scale`` times the window's resolution; **the page is left afterwards** (``about:blank``).

        The window is made as tall as the page, so the long page is laid out once at its full height, and the
        browser goes to ``about:blank`` before the window gets its size back. Chromium's own capture beyond the
        window (``captureBeyondViewport``) lays the page out twice, at full height and back at the window's: on a
        chapter, each layout takes about a second of CPU."""
        size = self.call("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
        height = min(int(size["height"]), max_height)
        params: dict = {"format": "png", "clip": {"x": 0, "y": 0, "width": self.width, "height": height, "scale": scale}}
        if path.suffix.lower() in (".jpg", ".jpeg"):
            params.update(format="jpeg", quality=85)
        self._window(self.width, height)
        data = self.call("Page.captureScreenshot", params, session=self.session, timeout=120)["data"]
        self.call("Page.navigate", {"url": "about:blank"}, session=self.session)
        self._window(self.width, self.height)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def _window(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=self.session)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._evt_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
