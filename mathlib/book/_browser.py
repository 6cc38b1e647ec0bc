"""Drive the distribution's headless Chromium without any Python dependency.

The DevTools protocol runs over ``--remote-debugging-pipe`` (file descriptors 3 and 4, messages
are JSON terminated by NUL), so neither Selenium/chromedriver nor Playwright is needed and the
browser's version never has to match a driver's. Used by the browser test (load pages offline,
check math, console, requests, images, search, dark theme; screenshots) and by ``make pdf``
(print the single-page HTML to PDF).

The network is disabled twice: Chromium runs in a private network namespace (``unshare -n``,
when available: root or user namespaces) and is pointed at a dead proxy with every host name
unresolvable, so nothing can leave the machine; pages are loaded from ``file://``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "headless Chromium not found: run `.ci/install-system-deps` (as root: installs Debian's "
    "'chromium' package) or set CHROMIUM=/path/to/chromium"
)

OFFLINE_FLAGS = [
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-pings",
    "--dns-prefetch-disable",
]


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _can_unshare() -> bool:
    exe = shutil.which("unshare")
    if not exe:
        return False
    return subprocess.run([exe, "-n", "true"], capture_output=True).returncode == 0


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium with one page (tab); ``with Chromium() as b: b.goto(url)``."""

    def __init__(self, executable: str | None = None, *, width: int = 1280, height: int = 900, offline: bool = True):
        exe = executable or find_chromium()
        if not exe:
            raise BrowserError(INSTALL_HINT)
        self.profile = tempfile.mkdtemp(prefix="mlchrome-")
        args = [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
            "--mute-audio", "--allow-file-access-from-files", f"--window-size={width},{height}",
        ]
        self.network_namespace = False
        if offline:
            args += OFFLINE_FLAGS
            if _can_unshare():
                args = [shutil.which("unshare"), "-n", *args]
                self.network_namespace = True
        import fcntl

        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        for name in ("to_chrome_r", "from_chrome_w"):  # move to fds >= 10: no clash with 3 and 4
            fd = locals()[name]
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            if name == "to_chrome_r":
                to_chrome_r = high
            else:
                from_chrome_w = high
        # The pipe ends become fds 3 (commands) and 4 (replies) of Chromium. A shell does the
        # renumbering, so no preexec_fn is needed (forking a multithreaded process, e.g. with JAX
        # loaded, is unsafe; without preexec_fn Python can use vfork/posix_spawn).
        shell = shutil.which("bash") or "/bin/bash"  # dash cannot redirect fds >= 10
        wrapper = [shell, "-c", f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', "bash", *args]
        self.proc = subprocess.Popen(wrapper, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, pass_fds=(to_chrome_r, from_chrome_w))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    # ------------------------------------------------------------------ protocol
    def _read_message(self, timeout: float) -> dict[str, Any]:
        import select

        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for Chromium")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise BrowserError("Chromium closed the DevTools pipe (did it crash?)")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, *, session: bool = True, timeout: float = 60) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        for i, ev in enumerate(self.events):
            if ev["method"] == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            ev = self._read_message(max(0.01, deadline - time.monotonic()))
            if ev.get("method") == method:
                return ev
            if "method" in ev:
                self.events.append(ev)

    # ------------------------------------------------------------------ page helpers
    def goto(self, url: str, timeout: float = 60) -> None:
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        res = self.call("Page.navigate", {"url": url})
        if res.get("errorText"):
            raise BrowserError(f"cannot load {url}: {res['errorText']}")
        self.wait_event("Page.loadEventFired", timeout)

    def eval(self, expression: str, timeout: float = 60) -> Any:
        res = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True}, timeout=timeout)
        if res.get("exceptionDetails"):
            raise BrowserError(f"script failed: {res['exceptionDetails'].get('exception', {}).get('description', res)}")
        return res.get("result", {}).get("value")

    def drain(self) -> None:
        """Collect the events that arrived so far (non-blocking)."""
        import select

        while True:
            ready, _, _ = select.select([self._r], [], [], 0.05)
            if not ready and b"\0" not in self._buf:
                return
            ev = self._read_message(1)
            if "method" in ev:
                self.events.append(ev)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def print_pdf(self, path: Path, **options) -> Path:
        params = {"printBackground": True, "preferCSSPageSize": True, "transferMode": "ReturnAsBase64"}
        params.update(options)
        data = self.call("Page.printToPDF", params, timeout=600)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False, timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- page checks
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "devtools:")

_PAGE_REPORT = r"""
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    try { await MathJax.startup.promise; } catch (e) {}
  }
  await Promise.all([...document.images].map(i => (i.complete ? 0 : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 10000); }))));
  await sleep(100);
  const prose = document.querySelector('main') || document.body;
  const clone = prose.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, .highlight, mjx-container, mjx-assistive-mml').forEach(e => e.remove());
  const text = clone.textContent;
  const rawTex = (text.match(/\\\(|\\\)|\\\[|\\\]|\$\$/g) || []).length;
  const untypeset = [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container'))
      .map(e => e.textContent.trim().slice(0, 80));
  return {
    title: document.title,
    typeset: document.querySelectorAll('mjx-container').length,
    untypeset, rawTex,
    mathErrors: [...document.querySelectorAll('mjx-merror, [data-mjx-error]')].map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 120)),
    images: document.images.length,
    brokenImages: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src')),
  };
})()
"""

_DARK = r"""
(async () => {
  document.documentElement.dataset.theme = 'dark';
  document.documentElement.dataset.mode = 'dark';
  try { localStorage.setItem('theme', 'dark'); localStorage.setItem('mode', 'dark'); } catch (e) {}
  await new Promise(r => setTimeout(r, 300));
  const rgb = s => (s.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
                                return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bg = el => { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
                       if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c; } return [255, 255, 255]; };
  const worst = [...document.querySelectorAll('mjx-container')].map(m => {
    const fg = rgb(getComputedStyle(m).color), b = bg(m);
    const [l1, l2] = [lum(fg), lum(b)].sort((x, y) => y - x);
    return {ratio: (l1 + 0.05) / (l2 + 0.05), fg: getComputedStyle(m).color, tex: m.getAttribute('aria-label') || ''};
  }).sort((a, b) => a.ratio - b.ratio);
  return {theme: document.documentElement.dataset.theme, n: worst.length, worst: worst.slice(0, 3)};
})()
"""


def page_problems(browser: Chromium, url: str, *, expect_math: bool = False) -> tuple[dict, list[str]]:
    """Load ``url`` and return (report, problems): raw TeX left, MathJax errors, console errors,
    uncaught exceptions, broken images and any request that would leave the machine."""
    browser.events.clear()
    browser.goto(url)
    report = browser.eval(_PAGE_REPORT, timeout=120)
    browser.drain()
    problems: list[str] = []
    for ev in browser.events:
        m, p = ev["method"], ev.get("params", {})
        if m == "Network.requestWillBeSent":
            req = p.get("request", {}).get("url", "")
            if not req.startswith(LOCAL_SCHEMES):
                problems.append(f"external request: {req}")
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            problems.append(f"uncaught exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            problems.append("console error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            problems.append(f"console error: {e.get('text')} {e.get('url', '')}".strip())
    if report["untypeset"]:
        problems.append(f"math not typeset: {report['untypeset'][:3]}")
    if report["rawTex"]:
        problems.append(f"{report['rawTex']} raw TeX delimiter(s) left in the text")
    if report["mathErrors"]:
        problems.append(f"MathJax errors: {report['mathErrors'][:3]}")
    if report["brokenImages"]:
        problems.append(f"images that did not load: {report['brokenImages']}")
    if expect_math and not report["typeset"]:
        problems.append("no typeset equation on a page that has math")
    return report, problems


def dark_theme_contrast(browser: Chromium) -> dict:
    """Switch the current page to the dark theme; the lowest contrast ratios of its equations."""
    return browser.eval(_DARK)


def search(browser: Chromium, search_url: str, timeout: float = 30) -> list[str]:
    """Run the built-in search (``search.html?q=...``); the result links."""
    browser.goto(search_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        links = browser.eval("[...document.querySelectorAll('#search-results li a, ul.search li a')].map(a => a.getAttribute('href'))")
        if links:
            return links
        time.sleep(0.3)
    return []
