"""The inbox page and the person page's crops in Debian's Chromium, against a real server:
groups of unknown faces as rows of crops, assigning one (with the people's names offered),
assigning chosen crops, ignoring a stranger, undoing, and each photo's crop with its quality
and negatives on the person page; both pages on a phone-sized screen too."""
from __future__ import annotations

import pytest

from tests.browser import Watched, check_on_a_phone, expect_alert, log_in, screenshot
from tests.support import envelope_of

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_inbox_and_person_pages(browser, server_factory, faces):
    server = server_factory(config={"inbox": {"min_cluster_faces": 2}, "dashboard": {"enabled": False}})
    for person in ("Madonna", "Elton John"):
        photo = faces / "celebrities" / "train" / person / "1.jpg"
        envelope_of(server.post(f"/people/{person}/photos", files={"file": (photo.name, photo.read_bytes())}), 201)
    for person in ("Jerry Seinfield", "Mindy Kaling", "Madonna"):
        for path in sorted((faces / "celebrities" / "val" / person).glob("*.jpg")):
            server.post("/predict", files={"file": (f"{person}-{path.name}", path.read_bytes())}, data={"source": "door"})
    madonna_named = envelope_of(server.get("/faces", params={"state": "named", "name": "Madonna"}), 200)["data"]["records"]
    envelope_of(server.post(f"/faces/{madonna_named[0]['id']}/not", json={"name": "Madonna"}), 200)
    groups = envelope_of(server.get("/faces/clusters"), 200)["data"]["clusters"]
    assert len(groups) >= 2

    watched = Watched(browser, server.url)
    page = watched.page
    try:
        log_in(page, server.password, "/inbox")
        assert page.get_by_role("link", name="Inbox").get_attribute("aria-current") == "page"
        cards = page.locator(".cluster")
        assert cards.count() == len(groups)
        first = cards.first
        assert first.locator(".crops img").count() == min(12, groups[0]["size"])
        assert first.locator(".cluster__kind").inner_text() in ("stranger", f"near {(groups[0]['near'] or {}).get('name')}?")
        assert page.locator("#people-names option").evaluate_all("options => options.map(o => o.value)") == \
            ["Elton John", "Madonna"]
        assert page.evaluate("[...document.querySelectorAll('.crop img')].every(img => img.complete && img.naturalWidth > 0)")
        screenshot(page, "70-inbox")

        # assign two chosen crops of the first group
        first.locator(".crop input").nth(0).check()
        first.locator(".crop input").nth(1).check()
        first.get_by_placeholder("Who is this?").fill("Chosen One")
        first.get_by_role("button", name="Assign selected").click()
        expect_alert(page, "enrolled as Chosen One")
        assert [p["photos"] for p in envelope_of(server.get("/people"))["data"] if p["name"] == "Chosen One"] == [2]

        # assign a whole group
        card = page.locator(f".cluster[data-cluster='{groups[1]['id']}']")
        card.get_by_placeholder("Who is this?").fill("Whole Group")
        card.get_by_role("button", name="Assign all").click()
        expect_alert(page, "enrolled as Whole Group")
        assert page.locator(f".cluster[data-cluster='{groups[1]['id']}']").count() == 0

        # undo it: the group is back
        page.get_by_role("button", name="Undo assign Whole Group").click()
        expect_alert(page, "The assign was undone")
        assert page.locator(f".cluster[data-cluster='{groups[1]['id']}']").count() == 1
        assert "Whole Group" not in [p["name"] for p in envelope_of(server.get("/people"))["data"]]

        # ignore it: a stranger, gone from the inbox
        page.locator(f".cluster[data-cluster='{groups[1]['id']}']").get_by_role("button", name="Ignore").click()
        expect_alert(page, "The group is ignored")
        assert page.locator(f".cluster[data-cluster='{groups[1]['id']}']").count() == 0

        # a person's photos with their crops and quality, and their negative
        page.goto("/people/Madonna")
        rows = page.locator("#photos tbody tr")
        assert rows.count() == 1 and rows.first.locator("img.photo-crop").count() == 1
        assert rows.first.locator("td[data-label=Quality]").inner_text().strip()[:2] in ("0.", "1.")
        negatives = page.locator(".negatives li")
        assert negatives.count() == 1 and negatives.first.locator("img").count() == 1
        screenshot(page, "71-person-crops")
        negatives.first.get_by_role("button", name="Remove negative").click()
        expect_alert(page, "The negative was removed")
        assert page.locator(".negatives li").count() == 0
        watched.check()
    finally:
        watched.close()
    state = browser_state(browser, server)
    check_on_a_phone_logged_in(browser, server, state, "/inbox", "72-inbox-phone")
    check_on_a_phone_logged_in(browser, server, state, "/people/Madonna", "73-person-phone")


def browser_state(browser, server):
    """A logged-in browser state, for the phone checks."""
    watched = Watched(browser, server.url)
    try:
        log_in(watched.page, server.password, "/inbox")
        return watched.context.storage_state()
    finally:
        watched.close()


def check_on_a_phone_logged_in(browser, server, state, path: str, shot: str) -> None:
    from tests.browser import no_sideways_scroll

    phone = Watched(browser, server.url, phone=True, storage_state=state)
    try:
        phone.page.goto(path)
        assert no_sideways_scroll(phone.page)
        screenshot(phone.page, shot)
        phone.check()
    finally:
        phone.close()
    check_on_a_phone(browser, server.url, path)  # logged out: it asks to log in, and still fits
