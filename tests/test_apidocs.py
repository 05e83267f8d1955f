"""/docs in Debian's Chromium: Swagger UI from the service's own files over /openapi.json, no
request to another origin, no CSP violation; a user authorises with the API token and tries a
request from the page."""
from __future__ import annotations

import pytest

from api.apidocs import missing_files
from tests.browser import Watched, screenshot
from tests.support import Server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    missing = missing_files()
    assert not missing, f"Swagger UI is not fetched ({', '.join(missing)}): run `make`"
    server = Server(tmp_path_factory.mktemp("apidocs"), config={"dashboard": {"enabled": False}}).start()
    yield server
    server.stop()


def tried(operation) -> str:
    """Open ``operation``, press "Try it out" then "Execute", as a user does; return the status shown."""
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    return status.inner_text().strip()


def test_a_user_authorises_with_the_token_and_tries_a_request(browser, server):
    watched = Watched(browser, server.url)
    page = watched.page
    elsewhere = []
    page.on("request", lambda request: None if request.url.startswith(server.url) else elsewhere.append(request.url))
    try:
        page.goto("/docs")
        operation = page.locator("[id$='-models']").first
        operation.wait_for()

        page.get_by_role("button", name="Authorize").first.click()
        bearer = page.locator(".modal-ux .auth-container").filter(has_text="(http, Bearer)")
        bearer.locator("#auth-bearer-value").fill(server.token)
        bearer.get_by_role("button", name="Apply credentials").click()
        bearer.get_by_role("button", name="Remove authorization").wait_for()  # authorised: "Logout" shows
        bearer.get_by_role("button", name="Close").click()

        assert tried(operation).startswith("200")
        assert '"status": "OK"' in operation.locator(".live-responses-table tbody").inner_text()
        screenshot(page, "apidocs-models-tried")
        watched.check()
        assert elsewhere == []
    finally:
        watched.close()


def test_without_the_token_the_same_request_answers_401(browser, server):
    watched = Watched(browser, server.url)
    page = watched.page
    try:
        page.goto("/docs")
        assert tried(page.locator("[id$='-models']").first).startswith("401")
        watched.check()
    finally:
        watched.close()
