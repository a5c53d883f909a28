"""The web page in a real headless Chromium against the real server (uvicorn in a subprocess).

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; Selenium is pointed
at /usr/bin/chromedriver so it never downloads a driver.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dedup.service import ingest_folder, open_store

from .conftest import SAMPLE_CATALOG
from .servers import running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
]
#: The upload: a product shot of the catalog, cropped and re-encoded here (a copy the catalog does not hold), so
#: the page must show that product among the closest ones whatever the model's phone-photo skill.
PRODUCT_SHOT = SAMPLE_CATALOG / "products" / "animals" / "penguin_with_spider.jpg"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="headless Chromium is not installed (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server on a free loopback port, over a store of a small copy of the sample catalog."""
    base = tmp_path_factory.mktemp("browser")
    catalog = base / "catalog"
    shutil.copytree(SAMPLE_CATALOG / "products" / "animals", catalog / "products" / "animals")
    shutil.copy(SAMPLE_CATALOG / "products.csv", catalog / "products.csv")
    store_dir = base / "store"
    with open_store(store_dir) as store:
        summary = ingest_folder(store, catalog, metadata=catalog / "products.csv")
    assert summary.new > 10 and summary.failed == 0

    with running_server(store_dir, base / "server.log") as url:
        yield url


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must never download anything
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_a_photo_and_see_the_closest_products(server: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(server + "/")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Find similar products"
    upload = tmp_path / "customer-upload.jpg"
    with Image.open(PRODUCT_SHOT) as im:
        w, h = im.size
        im.convert("RGB").crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(upload, quality=70)
    driver.find_element(By.ID, "file").send_keys(str(upload))

    wait = WebDriverWait(driver, 120)
    cards = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .card"))
    assert len(cards) == 5
    first = cards[0]
    assert re.fullmatch(r"SKU-\d+", first.find_element(By.CSS_SELECTOR, ".product-id").text)
    similarity = first.find_element(By.CSS_SELECTOR, ".similarity")
    assert re.fullmatch(r"similarity \d+\.\d %", similarity.text)
    assert 0.0 < float(similarity.get_attribute("data-value")) <= 1.0
    titles = [c.find_element(By.CSS_SELECTOR, ".title").text for c in cards]
    assert "Penguin With Spider" in titles, titles
    # Every thumbnail came from the server and decoded.
    wait.until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    # One card per product by default, as retrieval demos show them.
    assert "closest products" in driver.find_element(By.ID, "status").text
    product_ids = [c.find_element(By.CSS_SELECTOR, ".product-id").text for c in cards]
    assert len(set(product_ids)) == len(product_ids), product_ids

    link = driver.find_element(By.ID, "report-link")
    assert link.get_attribute("href") == server + "/api/v1/reports/latest.html"
    assert driver.find_element(By.ID, "report-json-link").get_attribute("href") == server + "/api/v1/reports/latest"

    shot = tmp_path / "results.png"
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # Nothing was blocked or failed to load (the page is self-contained; CSP forbids other hosts).
    problems = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not problems, problems


def test_a_bad_upload_shows_the_reason(server: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "not-a-photo.jpg"
    bad.write_bytes(b"this is text, not a photo\n" * 10)
    driver = browser
    driver.get(server + "/")
    driver.find_element(By.ID, "file").send_keys(str(bad))
    status = WebDriverWait(driver, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "#status.error").text or False)
    assert "not a recognised image format" in status
    assert not driver.find_elements(By.CSS_SELECTOR, "#results .card")
