"""The people actions of the models page in Debian's Chromium, against a real server: add
photos to a person, remove a person, forget one (with its confirmation, refused once), and
remove one photo on the person's page."""
from __future__ import annotations

import pytest

from tests.browser import Watched, expect_alert, log_in, screenshot
from tests.support import envelope_of

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def train_photo(faces, person: str, name: str):
    return faces / "celebrities" / "train" / person / name


def test_people_cards_add_photos_remove_and_forget(browser, server_factory, faces):
    server = server_factory()
    for person, photos in (("Madonna", ["1.jpg"]), ("Ben Afflek", ["1.jpg"]), ("Mindy Kaling", ["1.jpg", "2.jpg"])):
        envelope_of(server.post(f"/people/{person}/photos",
                                files=[("file", (name, train_photo(faces, person, name).read_bytes())) for name in photos]), 201)
    watched = Watched(browser, server.url)
    page = watched.page
    try:
        log_in(page, server.password, "/models")
        cards = page.locator(".gallery .person")
        assert cards.count() == 3
        screenshot(page, "50-people-cards")

        # add a photo to Madonna: choosing the file sends it
        page.locator("input[aria-label='Add photos of Madonna']").set_input_files(train_photo(faces, "Madonna", "2.jpg"))
        expect_alert(page, "1 photo of Madonna added")
        assert "2 photos" in cards.filter(has_text="Madonna").locator(".person__count").inner_text()

        # remove Ben Afflek from the active model
        page.get_by_role("button", name="Remove Ben Afflek from the active model").click()
        expect_alert(page, "Ben Afflek was removed from the active model")
        assert cards.filter(has_text="Ben Afflek").count() == 0

        # forget Madonna: the confirmation first, refused once
        page.get_by_role("button", name="Forget Madonna everywhere").click()
        dialog = page.locator("#confirm-forget")
        dialog.wait_for(state="visible")
        assert "Madonna" in dialog.inner_text()
        screenshot(page, "51-people-forget-confirm")
        page.get_by_role("button", name="Keep them").click()
        dialog.wait_for(state="hidden")
        assert cards.filter(has_text="Madonna").count() == 1
        page.get_by_role("button", name="Forget Madonna everywhere").click()
        page.get_by_role("button", name="Forget them").click()
        expect_alert(page, "Madonna was forgotten everywhere")
        assert cards.filter(has_text="Madonna").count() == 0
        assert [p["name"] for p in envelope_of(server.get("/people"))["data"]] == ["Mindy Kaling"]
        envelope_of(server.post("/people/Madonna/forget"), 404, "NOT_FOUND")  # in no stored model any more

        # one person's photos, and removing one of them
        page.get_by_role("link", name="Photos of Mindy Kaling").click()
        rows = page.locator("#photos tbody tr")
        assert rows.count() == 2 and "2.jpg" in rows.nth(1).inner_text()
        photo_id = rows.nth(0).get_attribute("data-photo")
        page.get_by_role("button", name=f"Remove photo {photo_id}").click()
        expect_alert(page, "A photo of Mindy Kaling was removed")
        assert rows.count() == 1 and rows.first.get_attribute("data-photo") != photo_id
        screenshot(page, "52-person-page")

        # rename them there: the page follows the new name
        page.get_by_label("New name").fill("Mindy K.")
        page.get_by_role("button", name="Rename").click()
        expect_alert(page, "Mindy Kaling is now called Mindy K.")
        assert page.get_by_role("heading", name="Mindy K.").is_visible()
        assert [p["name"] for p in envelope_of(server.get("/people"))["data"]] == ["Mindy K."]
        watched.check()
    finally:
        watched.close()
