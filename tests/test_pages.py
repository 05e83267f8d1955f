"""End-to-end tests of the pages: Debian's Chromium, headless, against a real server process.

A person logs in, uploads a zip of celebrities/train, watches the progress bar move and finish,
is taken to the predict page, drops a val photo and sees the right name, meets the messages for
a photo with no face, a stranger and a text file, tunes, switches models and deletes one: on a
desktop screen and on a phone-sized one. Every page's screenshot lands in
tests/artifacts/screenshots/ (git-ignored: they show real faces).
"""
from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

import pytest

from tests.browser import Watched, check_on_a_phone, drop_file, expect_alert, log_in, no_sideways_scroll, screenshot

VAL_PHOTO = ("Mindy Kaling", "2.jpg")  # recognised at distance 0.24 by the default pipeline
TWO_FACES = ("Madonna", "4.jpg")  # Madonna and a stranger behind her
# The pages show whatever grid was searched: a small one keeps the test quick on 2 cores.
SMALL_TUNE = {"tune": {"n_neighbors": [1, 3, 5], "weights": ["uniform", "distance"], "metric": ["euclidean"],
                       "algorithm": ["auto"], "cv_folds": 3}}


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("these are notes, not a photo\n")
    return path


def wait_until(page, expression: str, timeout: float = 30) -> None:
    """Wait until ``expression`` is true in the page (wait_for_function would need 'unsafe-eval')."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        time.sleep(0.1)


def tab_to(page, element_id: str, presses: int = 30) -> None:
    """Press Tab until the element ``element_id`` has the focus, as a keyboard user does."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} cannot be reached with the Tab key")


@pytest.mark.e2e
@pytest.mark.browser
def test_pages_before_any_model(browser, server_factory, faces, text_file, tmp_path):
    """A fresh service: empty states, keyboard use, log-in, and the errors of a bad upload."""
    server = server_factory()
    watched = Watched(browser, server.url)
    page = watched.page
    try:
        response = page.goto("/")
        policy = response.headers["content-security-policy"]
        assert "style-src 'self'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert page.locator("#no-model").is_visible()
        screenshot(page, "01-predict-no-model")

        # keyboard only: the drop zone's file input is reachable, shows its focus, opens the picker
        tab_to(page, "photo")
        outline = page.evaluate("getComputedStyle(document.querySelector('label[for=photo]')).outlineStyle")
        assert outline not in ("", "none")
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Enter")
        chooser.value.set_files(faces / "celebrities" / "val" / VAL_PHOTO[0] / VAL_PHOTO[1])
        page.locator("#preview").wait_for(state="visible")  # drawn on a canvas: no blob: URL needed
        tab_to(page, "predict-button")
        page.keyboard.press("Enter")
        alert = expect_alert(page, "There is no model yet", "CLASSIFIER_NOT_LOADED")
        assert alert.get_by_role("link", name="Train a model").is_visible()
        screenshot(page, "02-predict-no-model-error")

        # the train page asks to log in first, and brings the user back
        page.goto("/train")
        assert page.locator("#login-needed").is_visible()
        assert page.locator("#train-form").count() == 0
        page.locator("#login-needed").get_by_role("link", name="Log in").click()
        page.get_by_label("Admin password").fill("not the password")
        page.get_by_role("button", name="Log in").click()
        assert "Wrong password" in page.content()
        page.get_by_label("Admin password").fill(server.password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r"/train$"))
        assert page.get_by_role("button", name="Log out").is_visible()
        screenshot(page, "03-train-empty")

        # a text file is not a zip; a zip with photos outside person folders is not a dataset
        page.set_input_files("#archive", text_file)
        page.get_by_role("button", name="Start training").click()
        expect_alert(page, "not a zip the service can use", "ARCHIVE_NOT_VALID")
        assert page.locator("#job").is_hidden()
        assert page.get_by_role("button", name="Start training").is_enabled()
        screenshot(page, "04-train-not-a-zip")

        flat = tmp_path / "flat.zip"
        with zipfile.ZipFile(flat, "w") as archive:
            for name in ("1.jpg", "2.jpg"):
                archive.write(faces / "celebrities" / "train" / "Madonna" / name, name)
        page.set_input_files("#archive", flat)
        page.get_by_role("button", name="Start training").click()
        alert = expect_alert(page, "cannot make a model", "DATASET_NOT_VALID")
        assert "1.jpg" in alert.inner_text()
        screenshot(page, "05-train-bad-layout")

        # empty models page; an unknown job is a page in words, not JSON
        page.locator(".site-nav").get_by_role("link", name="Models").click()
        page.locator("#no-models").wait_for()
        screenshot(page, "06-models-empty")
        response = page.goto("/train?job=0123456789abcdef0123456789abcdef")
        assert response.status == 404 and "text/html" in response.headers["content-type"]
        assert page.get_by_role("heading", name="Not found").is_visible()
        screenshot(page, "07-error-page")

        # REST clients still get JSON from the same URL
        answer = server.get("/models", headers={"Accept": "application/json"}).json()["response"]
        assert answer["status"] == "OK" and answer["data"] == []
        watched.check()
    finally:
        watched.close()

    check_on_a_phone(browser, server.url, "/", "08-phone-predict-no-model")


def progress_of(page) -> tuple[float, float] | None:
    """(value, max) of the training progress bar; None while the page is changing."""
    try:
        return tuple(page.evaluate(
            "(() => { const bar = document.getElementById('job-progress');"
            " return bar && !bar.closest('[hidden]') ? [bar.value, bar.max] : null; })()") or ()) or None
    except Exception:
        return None


def train_and_watch(page, archive: Path, button: str, name: str) -> set[float]:
    """Upload ``archive``, follow the progress bar until the job's page; return the fractions seen."""
    page.set_input_files("#archive", archive)
    page.get_by_role("button", name=button).click()
    seen: set[float] = set()
    shot = False
    deadline = time.monotonic() + 240
    while "job=" not in page.url and time.monotonic() < deadline:
        state = progress_of(page)
        if state and page.locator("#job").get_attribute("data-state") == "running" and state[1] > 1:
            fraction = state[0] / state[1]
            seen.add(round(fraction, 3))
            if not shot and 0.2 < fraction < 0.9:
                assert re.match(r"\d+ / \d+", page.locator("#job-count").inner_text())
                assert page.locator("#job-elapsed").inner_text() not in ("", "–")
                screenshot(page, f"{name}-progress")
                shot = True
        time.sleep(0.15)
    page.wait_for_url(re.compile(r"job="))
    return seen


@pytest.mark.e2e
@pytest.mark.browser
@pytest.mark.slow
def test_train_predict_tune_and_switch_models(browser, server_factory, faces, celebrities_zip, text_file):
    """The whole journey on a real server: train, predict, errors, tune, switch and delete models."""
    server = server_factory(config=SMALL_TUNE)
    watched = Watched(browser, server.url)
    page = watched.page
    try:
        log_in(page, server.password, "/train")

        # train: the bar moves, then the result, then the predict page opens by itself
        seen = train_and_watch(page, celebrities_zip, "Start training", "10-train")
        assert len([fraction for fraction in seen if 0 < fraction < 1]) >= 2, f"the bar never moved: {seen}"
        assert page.get_by_role("heading", name="Training finished").is_visible()
        accuracy = page.locator("#result-accuracy").inner_text()
        assert re.fullmatch(r"\d+%", accuracy) and int(accuracy[:-1]) >= 70
        counts = page.locator("#people-counts li")
        assert counts.count() == 5 and "Mindy Kaling" in page.locator("#people-counts").inner_text()
        assert "no face found" in page.locator("#skipped").inner_text()
        assert page.get_by_role("link", name="Recognise faces with it").is_visible()
        assert "Opening the predict page in" in page.locator("#redirect").inner_text()
        trained_model = page.locator(".job-result__lede code").inner_text()
        train_job_page = page.url[len(server.url):]
        screenshot(page, "11-train-done")
        page.wait_for_url(server.url + "/", timeout=20_000)

        # predict: drop a val photo, see the preview, the boxes and the right name
        assert trained_model in page.locator(".lede").inner_text()
        assert page.locator(".chips li").count() == 5
        screenshot(page, "12-predict-empty")
        folder, name = VAL_PHOTO
        drop_file(page, "[data-dropzone]", faces / "celebrities" / "val" / folder / name, "image/jpeg")
        page.locator("#preview").wait_for(state="visible")
        assert name in page.locator("[data-file-name]").inner_text()
        page.get_by_role("button", name="Recognise faces").click()
        expect_alert(page, f"Recognised: {folder}")
        page.locator("[data-content]").wait_for(state="visible")
        rows = page.locator("#faces tbody tr")
        assert rows.count() == 1
        assert rows.first.locator(".face__label").inner_text() == folder
        assert re.fullmatch(r"\d+%", rows.first.locator(".face__percent").inner_text())
        image = page.locator("#annotated")
        assert re.search(r"/uploads/[0-9a-f]{32}\.jpg$", image.get_attribute("src"))
        wait_until(page, "document.getElementById('annotated').complete"
                         " && document.getElementById('annotated').naturalWidth > 0")
        screenshot(page, "13-predict-result")

        folder, name = TWO_FACES
        page.set_input_files("#photo", faces / "celebrities" / "val" / folder / name)
        page.get_by_role("button", name="Recognise faces").click()
        expect_alert(page, f"Recognised: {folder}")
        wait_until(page, "document.querySelectorAll('#faces tbody tr').length === 2")
        assert page.locator("#faces .face--unknown .face__label").inner_text() == "Unknown"
        assert "closest:" in page.locator("#faces .face--unknown .face__hint").inner_text()
        screenshot(page, "14-predict-known-and-unknown")

        # the messages: no face, a stranger, a text file
        page.set_input_files("#photo", faces / "samples" / "no_face_test.png")
        page.get_by_role("button", name="Recognise faces").click()
        expect_alert(page, "No face found in this photo", "NO_FACE_FOUND")
        assert page.locator("[data-content]").is_hidden()
        screenshot(page, "15-predict-no-face")

        page.set_input_files("#photo", faces / "samples" / "unknown_face.jpg")
        page.get_by_role("button", name="Recognise faces").click()
        expect_alert(page, "Nobody the model knows", "IMAGE_NOT_RECOGNIZED")
        page.locator("[data-content]").wait_for(state="visible")
        assert page.locator("#faces tbody tr .face__label").inner_text() == "Unknown"
        screenshot(page, "16-predict-stranger")

        drop_file(page, "[data-dropzone]", text_file, "text/plain")
        page.get_by_role("button", name="Recognise faces").click()
        expect_alert(page, "not a photo the service can read", "FILE_NOT_VALID")
        assert "{" not in page.locator("#result").inner_text()  # words, never raw JSON
        screenshot(page, "17-predict-text-file")

        # tune: best parameters at the end; "Stay on this page" stops the automatic move
        page.locator(".site-nav").get_by_role("link", name="Tune").click()
        train_and_watch(page, celebrities_zip, "Start tuning", "20-tune")
        done_at = time.monotonic()
        assert page.get_by_role("heading", name="Tuning finished").is_visible()
        assert page.locator("#best-params tbody tr").count() >= 3
        page.get_by_role("button", name="Stay on this page").click()
        tuned_model = page.locator(".job-result__lede code").inner_text()
        screenshot(page, "21-tune-done")
        done_url = page.url
        page.wait_for_timeout(max(0.0, done_at + 9.5 - time.monotonic()) * 1000)  # past the 8 s countdown
        assert page.url == done_url and "You stay on this page" in page.locator("#redirect").inner_text()

        # models: the tuned model is active; switch back to the trained one, delete the tuned one
        page.locator(".site-nav").get_by_role("link", name="Models").click()
        tuned_row = page.locator(f"tr[data-model='{tuned_model}']")
        trained_row = page.locator(f"tr[data-model='{trained_model}']")
        assert tuned_row.locator(".badge--active").is_visible()
        gallery = page.locator(".gallery .person")
        assert gallery.count() == 5
        assert "photos" in gallery.first.locator(".person__count").inner_text()
        assert page.locator(".gallery img").count() == 0  # names and counts, never face photos
        screenshot(page, "30-models")

        trained_row.get_by_role("button", name=f"Activate model {trained_model}").click()
        expect_alert(page, f"Model {trained_model} is now the active model")
        assert page.locator(f"tr[data-model='{trained_model}'] .badge--active").is_visible()
        screenshot(page, "31-models-switched")
        page.locator(".site-nav").get_by_role("link", name="Predict").click()
        assert trained_model in page.locator(".lede").inner_text()
        page.locator(".site-nav").get_by_role("link", name="Models").click()

        page.get_by_role("button", name=f"Delete model {tuned_model}").click()
        dialog = page.locator("#confirm-delete")
        dialog.wait_for(state="visible")
        assert tuned_model in dialog.inner_text()
        screenshot(page, "32-models-delete-confirm")
        page.keyboard.press("Escape")  # changed their mind
        dialog.wait_for(state="hidden")
        assert page.locator(f"tr[data-model='{tuned_model}']").count() == 1
        page.get_by_role("button", name=f"Delete model {tuned_model}").click()
        page.get_by_role("button", name="Delete the model").click()
        expect_alert(page, f"Model {tuned_model} was deleted")
        assert page.locator(f"tr[data-model='{tuned_model}']").count() == 0
        watched.check()
        login_state = watched.context.storage_state()
    finally:
        watched.close()

    # the same pages on a phone-sized screen
    phone = Watched(browser, server.url, phone=True, storage_state=login_state)
    page = phone.page
    try:
        page.goto("/")
        folder, name = TWO_FACES
        page.set_input_files("#photo", faces / "celebrities" / "val" / folder / name)
        page.get_by_role("button", name="Recognise faces").click()
        wait_until(page, "document.querySelectorAll('#faces tbody tr').length === 2")
        wait_until(page, "document.getElementById('annotated').naturalWidth > 0")
        assert no_sideways_scroll(page)
        screenshot(page, "40-phone-predict-result")
        for path, shot in (("/models", "41-phone-models"), (train_job_page, "42-phone-train-done")):
            page.goto(path)
            assert no_sideways_scroll(page), f"{path} scrolls sideways on a phone"
            screenshot(page, shot)
        phone.check()
    finally:
        phone.close()


def test_pages_for_a_form_posted_without_javascript(tmp_path):
    """What a REST view can answer a browser's plain form post with (see ``api.negotiation``): pages in words."""
    from api import create_app, errors, negotiation, pages
    from datastructure.response import envelope
    from tests.support import make_config

    app = create_app(make_config(tmp_path / "data"))
    stranger = {"name": "unknown", "confidence": 0.0, "distance": 0.672, "candidate": "Madonna", "runner_up": None,
                "runner_up_distance": None, "box": {"top": 201, "right": 430, "bottom": 388, "left": 242}}
    answer = {"response": {"status": "OK", "error": "IMAGE_NOT_RECOGNIZED", "description": f"{'0' * 32}.jpg",
                           "data": {}, "faces": [stranger], "image_url": f"/uploads/{'0' * 32}.jpg", "model": None}}
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    with app.test_request_context("/predict", method="POST", headers={"Accept": browser_accept}):
        assert negotiation.wants_html()
        page = pages.prediction_page(answer)
        html = page.get_data(as_text=True)
        assert page.status_code == 200 and page.mimetype == "text/html"
        assert "Nobody the model knows" in html and "closest: Madonna" in html and "201, 430, 388, 242" in html

        page = errors.error_page("REQUEST_TOO_LARGE", "the upload is over 268435456 bytes", 413)
        html = page.get_data(as_text=True)
        assert page.status_code == 413 and "This file is too large" in html and "over 268435456 bytes" in html

        moved = pages.job_redirect(envelope({"id": "ab" * 16, "kind": "tune"}))
        assert moved.status_code == 303 and moved.location.endswith(f"/tune?job={'ab' * 16}")
    with app.test_request_context("/predict", method="POST", headers={"Accept": "application/json"}):
        assert not negotiation.wants_html()
