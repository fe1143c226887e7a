"""The service's web page in headless Chromium (Selenium with Debian's chromium + chromedriver,
installed by .ci/run): upload a photo, see the faces drawn and counted.

Skipped, with the reason, only when the browser cannot be started here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from damofd.models.bundled import DEFAULT_MODEL
from tests._serve_util import running_server

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
webdriver = pytest.importorskip("selenium.webdriver")

ROOT = Path(__file__).resolve().parents[1]


def _browser():
    from selenium.webdriver.chrome.service import Service

    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium "
                    "chromium-driver)")  # fmt: skip
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1400",
                "--disable-dev-shm-usage"):  # fmt: skip
        opts.add_argument(arg)
    try:
        return webdriver.Chrome(options=opts, service=Service(driver))
    except Exception as e:  # the browser could not start in this environment
        pytest.skip(f"headless Chromium could not start: {str(e).splitlines()[0]}")


@pytest.mark.slow
def test_page_uploads_and_draws(assets: Path, tmp_path: Path) -> None:

    from damofd.inference import FaceDetector
    from damofd.serve.app import ServeConfig, create_app

    photo = assets / "images" / "t1.jpg"
    if not photo.is_file():
        pytest.skip(f"asset missing: {photo}")
    det = FaceDetector(score_thr=0.02)
    app = create_app(det, ServeConfig(), model_name=det.model_label)
    with running_server(app) as (base, _srv):
        _check_page(base, photo, tmp_path)


def _check_page(base: str, photo: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    resp = httpx.post(f"{base}/v1/detect", content=photo.read_bytes(), timeout=60)
    expected = len(resp.json()["faces"])
    browser = _browser()
    try:
        browser.get(base + "/")
        WebDriverWait(browser, 20).until(
            lambda b: b.find_element(By.ID, "model").text not in ("", "…")
        )
        assert DEFAULT_MODEL in browser.find_element(By.ID, "model").text
        browser.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(browser, 60).until(
            ec.text_to_be_present_in_element((By.ID, "status"), "found")
        )
        status = browser.find_element(By.ID, "status").text
        assert status == f"{expected} face{'' if expected == 1 else 's'} found"
        size = browser.execute_script(
            "const c = document.getElementById('canvas'); return [c.width, c.height];"
        )
        assert size == [1280, 886]  # the photo, drawn at its own size
        assert "server" in browser.find_element(By.ID, "timing").text
        shot = tmp_path / "serve_page.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        browser.quit()
