"""Make ``docs/app.png``: ``python app.py`` on its embedded defaults, one gallery sample inspected.

Starts the app as a user would (offline, on an ephemeral port), lets Debian's headless Chromium
(driven by Playwright) pick a generated sample and press Inspect, and saves a full-page
screenshot. Needs ``/usr/bin/chromium`` (``apt-get install chromium``).

Usage:
    python docs/make_screenshot.py [--out docs/app.png] [--sample 1 | --kind "short pin"]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.browser.app_server import app_env, launched_app  # noqa: E402
from tests.browser.test_space_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "app.png")
    parser.add_argument("--sample", type=int, default=1, help="gallery sample to inspect")
    parser.add_argument(
        "--kind", help="inspect the first gallery sample whose truth names this kind instead"
    )
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="qeu-shot-") as tmp:
        # No QEU_* model variables: the embedded defaults under models/, as `python app.py`.
        # the embedded models, answering as the Space does: under the answer grammar
        env = app_env(
            Path(tmp), {}, QEU_MAX_NEW_TOKENS="64", QEU_GALLERY_SIZE="8", QEU_ANSWER_GRAMMAR="1"
        )
        with launched_app(Path(tmp), env) as app, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(app.url, wait_until="load")  # not networkidle: the heartbeat stays open
            items = page.locator("#sample-gallery button.thumbnail-item")
            items.first.wait_for()
            for index in range(items.count()) if args.kind else [args.sample]:
                items.nth(index).click()
                page.wait_for_function("document.querySelector('#truth textarea').value !== ''")
                page.wait_for_timeout(1000)  # the truth of this sample, not the previous one
                if not args.kind or args.kind in page.locator("#truth textarea").input_value():
                    break
            page.locator("#inspect").click()
            page.wait_for_function(
                "document.querySelector('#judging').innerText.includes('Judging inspection')"
            )
            page.wait_for_timeout(1500)  # let the images finish drawing
            page.screenshot(path=str(args.out), full_page=True)
            print(f"truth: {page.locator('#truth textarea').input_value()}")
            print(f"base:  {page.locator('#base-answer').inner_text()}")
            print(f"tuned: {page.locator('#tuned-answer').inner_text()}")
            browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
