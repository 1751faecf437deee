"""Headless Chromium (Debian's, driven by Playwright) clicks through Inspect and Feedback.

Issue 11, item 1: inspect one gallery sample, pick another without inspecting it: every result
panel and the feedback panel are cleared and feedback is refused; inspect the new one, click a
pin of the feedback grid, judge, send a comment that is HTML: the stored row is the inspected
image with the answers the server gave it. Then the views (item 7): the log shows the comment as
text, filled when a page loads, a 2,000-character word wraps, and the page fits 420 px. A
screenshot of the page is saved (``QEU_SCREENSHOT=path`` also copies it there). Then the
adapters (issue 13, item 3): the picker, and the "Where they differ" view.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qeu_space.geometry import CompositeLayout
from qeu_space.vocabulary import Position
from tests.browser.app_server import (
    TINY_ADAPTERS,
    RunningApp,
    app_env,
    launched_app,
    make_tiny_models,
)

#: Debian's chromium; scripts/test.sh installs it there (or names another with QEU_CHROMIUM).
CHROMIUM = os.environ.get("QEU_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COMMENT = '<img src=x onerror="window.__xss=1"> C7 is bent, not the model\'s answer'
LONG_WORD = "x" * 2000
TIMEOUT_MS = 90_000
FIRST, SECOND = 2, 1  # gallery samples: a passed product, then one with two defects

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> RunningApp:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does, as root)"
        )
    tmp = tmp_path_factory.mktemp("browser")
    with launched_app(tmp, app_env(tmp, make_tiny_models(tmp / "models"))) as app:
        yield app


def _fraction(position: str) -> tuple[float, float]:
    """Where a pin of the test product is on the composite, as fractions of its side."""
    layout = CompositeLayout(448)
    ox, oy = layout.origin("test")
    x, y = layout.connector.pin_center(Position.parse(position))
    return (ox + x) / layout.size, (oy + y) / layout.size


def _value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()


def _text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def _pick(page, index: int) -> str:
    """Pick gallery sample ``index``; returns its truth once the truth box shows it."""
    before = _value(page, "truth")
    page.locator("#sample-gallery button.thumbnail-item").nth(index).click()
    page.wait_for_function(
        "(before) => { const v = document.querySelector('#truth textarea').value;"
        " return v !== '' && v !== before; }",
        arg=before,
    )
    return _value(page, "truth")


def _open(page, url: str) -> None:
    """Load the page (not "networkidle": the session's heartbeat stream stays open)."""
    page.goto(url, wait_until="load")
    page.locator("#sample-gallery button.thumbnail-item").first.wait_for()


def _inspect(page) -> None:
    page.locator("#inspect").click()
    page.wait_for_function(
        "document.querySelector('#judging').innerText.includes('Judging inspection')"
        " && document.querySelector('#soartc').innerText.includes('SOARTC verdict')"
    )


def test_feedback_is_bound_to_the_inspection_in_chromium(
    running: RunningApp, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    from app import SyntheticSamples
    from qeu_space.feedback import FeedbackStore

    gallery = SyntheticSamples().gallery(4, 0)  # the app's gallery (QEU_GALLERY_SIZE=4, seed 0)
    store = FeedbackStore(running.feedback_db)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            _open(page, running.url)
            assert "Not inspected yet" in _text(page, "soartc")  # no score before inspecting
            page.get_by_role("tab", name="Feedback log").click()
            page.get_by_text("No feedback yet").wait_for()  # filled on page load
            page.get_by_role("tab", name="Inspect").click()

            # Inspect the first sample: every panel fills.
            first_truth = _pick(page, FIRST)
            assert first_truth == gallery[FIRST].truth_text
            _inspect(page)
            assert page.locator("#heatmap img").count() == 1
            assert _text(page, "base-answer") and _text(page, "tuned-answer")
            assert _value(page, "case") == gallery[FIRST].source

            # Pick another sample without inspecting it: nothing of the first one stays.
            second_truth = _pick(page, SECOND)
            assert second_truth == gallery[SECOND].truth_text != first_truth
            page.wait_for_function(
                "document.querySelector('#judging').innerText.includes('Nothing to judge yet')"
            )
            assert "Not inspected yet" in _text(page, "soartc")
            assert page.locator("#heatmap img").count() == 0
            assert page.locator("#feedback-grid img").count() == 0
            assert _text(page, "base-answer").strip() == ""
            assert _text(page, "tuned-answer").strip() == ""
            assert _text(page, "comparison").strip() == ""
            assert _value(page, "corrected") == ""
            before = store.count()
            page.locator("#judgement label", has_text="correct").click()
            page.locator("#send-feedback").click()
            page.get_by_text("no inspection to judge").first.wait_for()
            assert store.count() == before  # nothing stored against the wrong image

            # Inspect the second sample, correct it on the grid, send.
            _inspect(page)
            judging = _text(page, "judging")
            assert gallery[SECOND].source in judging
            grid = page.locator("#feedback-grid img")
            grid.wait_for()
            box = grid.bounding_box()
            fx, fy = _fraction("C7")
            page.locator("#corrected textarea").fill("")
            grid.click(position={"x": box["width"] * fx, "y": box["height"] * fy})
            page.wait_for_function(
                "document.querySelector('#corrected textarea').value.includes('C7 bent pin')"
            )
            assert _value(page, "corrected") == "Defective. 1 defect: C7 bent pin (left)."
            page.locator("#judgement label", has_text="wrong").click()
            page.locator("#comment textarea").fill(COMMENT)
            page.locator("#send-feedback").click()
            # A gallery sample's truth is the server's: a correction against it is refused.
            page.get_by_text("contradicts this sample's truth").first.wait_for()
            assert store.count() == before
            page.locator("#corrected textarea").fill(second_truth)
            page.locator("#send-feedback").click()
            page.wait_for_function(
                "document.querySelector('#feedback-status').innerText.includes('Thank you')"
            )
            row = store.recent(1)[0]
            assert store.count() == before + 1
            assert judging.startswith(f"Judging inspection {row.inspection_id[:8]}")
            assert row.truth == second_truth and row.source == gallery[SECOND].source
            stored = np.asarray(store.image(row.image_sha256))
            assert np.array_equal(stored, np.asarray(gallery[SECOND].composite))
            assert row.corrected_answer == second_truth and row.truth_source == "server"
            assert row.comment == COMMENT and not row.correct

            # The log shows the comment as text: no element was made from it, no script ran.
            page.get_by_role("tab", name="Feedback log").click()
            log = page.locator("#feedback-log")
            log.get_by_text("C7 is bent, not the model's answer", exact=False).wait_for()
            assert COMMENT in log.inner_text()
            assert log.locator("img").count() == 0
            assert page.evaluate("window.__xss === undefined")
            assert dialogs == []

            page.get_by_role("tab", name="Inspect").click()
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    with Image.open(shot) as image:
        assert image.width == 1400 and image.height > 1500
    target = os.environ.get("QEU_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)


def test_views_wrap_and_fit_420_px(running: RunningApp) -> None:
    """A 2,000-character word in the log wraps; the log fills on load; nothing is clipped at
    420 px (the gallery's columns included)."""
    from playwright.sync_api import sync_playwright

    from qeu_space.feedback import FeedbackEntry, FeedbackStore

    FeedbackStore(running.feedback_db).add(
        FeedbackEntry(Image.new("RGB", (96, 96)), "Passed.", "Passed.", comment=LONG_WORD)
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for width in (1400, 420):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.set_default_timeout(TIMEOUT_MS)
                _open(page, running.url)
                page.get_by_role("tab", name="Feedback log").click()
                table = page.locator("#feedback-log table")
                table.wait_for()  # filled on page load, no Refresh pressed
                assert LONG_WORD in page.locator("#feedback-log").inner_text()
                assert table.bounding_box()["width"] <= width
                page.get_by_role("tab", name="Inspect").click()
                thumbs = page.locator("#sample-gallery button.thumbnail-item")
                thumbs.first.wait_for()
                for i in range(thumbs.count()):
                    right = thumbs.nth(i).bounding_box()
                    assert right["x"] >= 0 and right["x"] + right["width"] <= width + 1, i
                overflow = page.evaluate("document.documentElement.scrollWidth")
                assert overflow <= width + 1, f"{overflow} px wide at {width} px"
                page.close()
        finally:
            browser.close()


def test_adapter_picker_and_where_they_differ_in_chromium(running: RunningApp) -> None:
    """Issue 13, item 3: the picker chooses which adapter answers beside the base (the panel
    says which); "Where they differ" answers the generated samples with the base and the chosen
    adapter, lists those on which they disagree with the truth, and a listed sample opens in the
    Inspect tab with that adapter picked."""
    from playwright.sync_api import sync_playwright

    first, second = TINY_ADAPTERS
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            _open(page, running.url)
            assert _value(page, "adapter-pick") == first
            _pick(page, SECOND)
            _choose(page, "adapter-pick", second)
            _inspect(page)
            assert f"adapter {second}" in _text(page, "tuned-title")
            assert f"fine-tuned ({second})" in _text(page, "comparison")

            page.get_by_role("tab", name="Where they differ").click()
            _choose(page, "differ-pick", second)
            page.locator("#differ-run").click()
            page.wait_for_function(
                "document.querySelector('#differ-table').innerText.includes('disagree on')"
            )
            table = _text(page, "differ-table")
            assert f"{second} and the base disagree on" in table
            thumbs = page.locator("#differ-gallery button.thumbnail-item")
            thumbs.first.wait_for()
            listed = int(table.split("disagree on ")[1].split(" of ")[0])
            assert thumbs.count() == listed >= 1  # random adapters: they differ somewhere
            before = _value(page, "case")
            thumbs.first.click()
            page.wait_for_function(
                "(before) => document.querySelector('#case input, #case textarea').value"
                " !== before",
                arg=before,
            )
            assert page.get_by_role("tab", name="Inspect").get_attribute("aria-selected") == "true"
            assert _value(page, "case").startswith("sample ") and _value(page, "truth")
            assert _value(page, "adapter-pick") == second
        finally:
            browser.close()


def _choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in the dropdown ``elem_id``."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_function(
        "([id, v]) => document.querySelector(`#${id} input`).value === v", arg=[elem_id, option]
    )
