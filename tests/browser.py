"""Drive Debian's Chromium with Playwright for the page tests.

Only Playwright's Python package is installed from PyPI; the browser is the distribution's
own (``apt-get install chromium``), never one a tool downloads. Every page opened here is
watched for JavaScript errors and Content-Security-Policy violations, and screenshots go to
the git-ignored tests/artifacts/screenshots/ (they show real faces: never commit them).
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.support import under_ci

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("PYRECOGNIZER_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"
INSTALL_HINT = ("the browser tests need Playwright's Python package and Debian's Chromium: "
                "pip install -r requirements-dev.txt && apt-get install -y chromium "
                "(never `playwright install`)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Recorded in every document before the page's own scripts run (init scripts are not subject
# to the page's policy): any CSP violation, e.g. an inline style or script the pages must not use.
WATCH_SCRIPT = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"} at ` +
                           `${event.sourceFile || location.pathname}:${event.lineNumber || 0}`);
});
"""


def require_browser() -> None:
    """Skip when Playwright or Chromium is missing; under CI (CI=true) fail instead."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if not CHROMIUM.is_file():
        missing.append(str(CHROMIUM))
    if missing:
        message = f"{' and '.join(missing)} missing: {INSTALL_HINT}"
        if under_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def launch(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)


class Watched:
    """A browser context whose pages report JavaScript errors and CSP violations."""

    def __init__(self, browser, base_url: str, *, phone: bool = False, storage_state=None):
        options = {"viewport": PHONE if phone else DESKTOP, "base_url": base_url, "locale": "en-GB"}
        if phone:
            options.update(device_scale_factor=2, is_mobile=True, has_touch=True)
        if storage_state:
            options["storage_state"] = storage_state
        self.context = browser.new_context(**options)
        self.context.set_default_timeout(30_000)
        self.context.add_init_script(WATCH_SCRIPT)
        self.problems: list[str] = []
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.problems.append(f"JavaScript error: {error}"))
        self.page.on("console", self._console)
        # Intercept file choosers from the start: Playwright turns interception on lazily, and a
        # picker opened before it is on is a native one the test never sees.
        self.page.on("filechooser", lambda chooser: None)

    def _console(self, message) -> None:
        text = message.text
        # an error status the page asked for (a 400 for a text file...) is logged by Chromium
        if message.type == "error" and not text.startswith("Failed to load resource"):
            self.problems.append(f"console error: {text}")
        if "Content Security Policy" in text or "Refused to" in text:
            self.problems.append(f"CSP: {text}")

    def violations(self) -> list[str]:
        """CSP violations of the current document, as the page recorded them."""
        try:
            return list(self.page.evaluate("window.__violations || []"))
        except Exception:  # the page is navigating: the next check sees the new document
            return []

    def check(self) -> None:
        """Fail on any JavaScript error or CSP violation seen so far."""
        problems = self.problems + self.violations()
        assert not problems, "the page misbehaved:\n" + "\n".join(problems)

    def close(self) -> None:
        self.context.close()


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as tests/artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.evaluate("window.scrollTo({top: 0, behavior: 'instant'})")  # a full page, its header on top
    page.screenshot(path=str(path), full_page=True, animations="disabled", caret="initial")
    return path


def drop_file(page, selector: str, path: Path, mime: str, name: str | None = None) -> None:
    """Drag ``path`` onto the element ``selector`` as a user dropping a file from the desktop."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    page.evaluate(
        """([selector, name, mime, data]) => {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name, {type: mime}));
          const target = document.querySelector(selector);
          for (const type of ["dragenter", "dragover", "drop"]) {
            target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
          }
        }""",
        [selector, name or Path(path).name, mime, data])


def log_in(page, password: str, next_path: str = "/") -> None:
    """Log in through the login page, as a person does."""
    page.goto(f"/login?next={next_path}")
    page.get_by_label("Admin password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**{next_path}")


def no_sideways_scroll(page) -> bool:
    """True when the page fits the viewport's width (nothing sticks out on a phone)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def expect_alert(page, title: str, code: str | None = None):
    """The page's message reads ``title`` (and carries ``code``); return the alert."""
    alert = page.locator(".messages .alert").filter(has=page.locator(".alert__title", has_text=title)).first
    alert.wait_for(state="visible")
    if code:
        assert alert.get_attribute("data-code") == code
    return alert


def check_on_a_phone(browser, url: str, path: str, shot: str | None = None) -> None:
    """Open ``path`` on a phone-sized screen: no sideways scrolling, no console error or CSP
    violation (``Watched.check``); ``shot``: also save a screenshot under that name."""
    phone = Watched(browser, url, phone=True)
    try:
        phone.page.goto(path)
        assert no_sideways_scroll(phone.page)
        if shot:
            screenshot(phone.page, shot)
        phone.check()
    finally:
        phone.close()
