"""Headless Chromium (Debian's, driven by Playwright) clicks through Inspect and Feedback.

Pick a gallery sample, inspect it, click a pin of the feedback grid, judge the answer, send a
comment that is HTML, and read it back escaped in the feedback log; a screenshot of the page is
saved (``QEU_SCREENSHOT=path`` also copies it there, which is how ``docs/app.png`` is made).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from qeu_space.geometry import CompositeLayout
from qeu_space.vocabulary import Position
from tests.browser.app_server import RunningApp, app_env, launched_app, make_tiny_models

CHROMIUM = "/usr/bin/chromium"
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
TIMEOUT_MS = 90_000

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> RunningApp:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
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
    return page.locator(f"#{elem_id} textarea").input_value()


def test_inspect_and_feedback_in_chromium(running: RunningApp, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(running.url, wait_until="networkidle")

            # Inspect: pick the second generated sample, then run every panel.
            page.locator("#sample-gallery button.thumbnail-item").nth(1).click()
            page.wait_for_function("document.querySelector('#truth textarea').value !== ''")
            truth = _value(page, "truth")
            assert truth.startswith(("Defective.", "Passed."))
            page.locator("#inspect").click()
            page.wait_for_function(
                "document.querySelector('#tuned-answer textarea').value !== ''"
                " && document.querySelector('#comparison').innerText.includes('truth')"
            )
            assert _value(page, "base-answer") != _value(page, "tuned-answer")
            assert f"truth: {truth}" in page.locator("#comparison").inner_text()

            # Feedback: click pin C7 on the grid, judge, comment with HTML, send.
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
            page.wait_for_function(
                "document.querySelector('#feedback-status').innerText.includes('Thank you')"
            )

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

    from qeu_space.feedback import FeedbackStore

    row = FeedbackStore(running.feedback_db).recent(1)[0]
    assert row.comment == COMMENT and not row.correct
    assert row.corrected_answer == "Defective. 1 defect: C7 bent pin (left)."
    assert row.truth == truth and row.source.startswith("sample qa-test-")
