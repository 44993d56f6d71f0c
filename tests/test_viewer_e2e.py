"""The viewer end to end: the real server (uvicorn on a loopback port) over a tiny phantom
index, driven by Debian's headless chromium through Selenium and its matching chromedriver
(installed by .ci/run). Screenshots go to a temporary folder, or to ``$CXRHASH_SCREENSHOTS``
(``CXRHASH_SCREENSHOTS=docs/images`` refreshes those of docs/service.md).

Without chromium the tests skip with a message locally and fail under CI (``$CI`` set)."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import build_phantom_index, serving, write_dicom
from PIL import Image

from cxrhash.serve import create_app

pytestmark = pytest.mark.slow
WAIT_S = 30


def _need_browser() -> None:
    """Skip (or fail under CI) unless chromium, chromedriver and selenium are here."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install '.[test]')")
    if missing:
        why = f"the viewer's e2e test needs {', '.join(missing)}; .ci/run installs them"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="session", autouse=True)
def _browser_first() -> None:
    """Check for the browser before the (session-scoped) training of the tiny model."""
    _need_browser()


@pytest.fixture(scope="module")
def index_dir(tiny_run: Path, phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_phantom_index(tiny_run, phantom_dir, tmp_path_factory.mktemp("viewer") / "idx")


@pytest.fixture(scope="module")
def base_url(index_dir: Path, phantom_dir: Path) -> Iterator[str]:
    """The real app under uvicorn in a thread, showing the phantom films as the cases'
    images (``--images``)."""
    with serving(create_app(index_dir, images=f"phantom:{phantom_dir}")) as url:
        yield url


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """Headless chromium at a laptop's 1366×768, its console log kept (CSP violations)."""
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1366,768")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(
        options=options, service=Service(shutil.which("chromedriver") or "chromedriver")
    )
    browser.set_window_size(1366, 768)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$CXRHASH_SCREENSHOTS`` or a temporary folder."""
    chosen = os.environ.get("CXRHASH_SCREENSHOTS")
    out = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


# ---- helpers -------------------------------------------------------------------------


def wait_for(driver: Any, condition: Any, what: str) -> Any:
    """``condition(driver)`` once truthy, within ``WAIT_S``; the failure names ``what``."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message=f"waiting for {what}")


def open_viewer(driver: Any, base_url: str) -> None:
    """Load ``/`` afresh and wait until the index's labels fill the finding filter."""
    driver.get(base_url + "/")
    wait_for(driver, lambda d: len(options_of(d, "finding-filter")) > 1, "the finding filter")


def options_of(driver: Any, select_id: str) -> list[str]:
    """The option values of a ``<select>``."""
    return driver.execute_script(
        "return [...document.getElementById(arguments[0]).options].map(o => o.value)", select_id
    )


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def cards(driver: Any) -> list[dict[str, Any]]:
    """Each gallery card's case id, distance line and findings (✓ marks shared ones)."""
    return driver.execute_script(
        """return [...document.querySelectorAll('#gallery .card')].map(c => ({
             id: c.dataset.caseId,
             distance: c.querySelector('.distance').textContent,
             findings: [...c.querySelectorAll('.chip')].map(x => x.dataset.finding),
             shared: [...c.querySelectorAll('.chip.shared')].map(x => x.dataset.finding)}))"""
    )


def chip_texts(driver: Any, case_id: str, *, shared: bool) -> list[str]:
    """The visible text of one card's (shared) finding chips."""
    return driver.execute_script(
        "const c = [...document.querySelectorAll('#gallery .card')]"
        ".find(c => c.dataset.caseId === arguments[0]);"
        "return [...c.querySelectorAll(arguments[1])].map(x => x.textContent)",
        case_id,
        ".chip.shared" if shared else ".chip:not(.shared)",
    )


def loaded_images(driver: Any, selector: str) -> list[int]:
    """The natural width of each image matching ``selector`` (0: not loaded or broken)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(i => i.complete ? i.naturalWidth : 0)",
        selector,
    )


def pixel(driver: Any, x: int, y: int) -> list[int]:
    """The RGB of the query canvas at (x, y), in the film's own pixels."""
    return driver.execute_script(
        "const c = document.getElementById('query-canvas');"
        "return [...c.getContext('2d').getImageData(arguments[0], arguments[1], 1, 1).data]"
        ".slice(0, 3)",
        x,
        y,
    )


def answered(driver: Any) -> int:
    """How many searches the page has had answered (``body[data-searches]``)."""
    return int(driver.execute_script("return document.body.dataset.searches || 0"))


def after_search(driver: Any, action: Any, what: str) -> None:
    """Run ``action()`` and wait until the page has the answer of the search it started."""
    before = answered(driver)
    action()
    wait_for(driver, lambda d: answered(d) > before, what)


def upload(driver: Any, path: Path) -> None:
    """Choose ``path`` in the file input, as the file picker does, and wait for the answer."""
    after_search(driver, lambda: by_id(driver, "file-input").send_keys(str(path)), "a search")


def csp_violations(driver: Any) -> list[str]:
    """Console messages about the Content Security Policy (an inline script, a CDN, …)."""
    return [
        e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]
    ]


# ---- the tests -----------------------------------------------------------------------


def test_upload_gallery_compare_and_filter(driver, base_url, phantom_dir, shots) -> None:
    film = sorted((phantom_dir / "images").glob("*.png"))[7]
    open_viewer(driver, base_url)
    k_input = by_id(driver, "k-input")
    k_input.clear()
    k_input.send_keys("8")
    upload(driver, film)
    shown = cards(driver)
    assert len(shown) == 8, shown
    assert shown[0]["distance"].startswith("distance 0"), shown[0]  # the film finds itself
    assert all(c["distance"].startswith("distance ") and c["findings"] for c in shown)
    distances = [int(c["distance"].split()[1]) for c in shown]
    assert distances == sorted(distances)
    predicted = set(
        driver.execute_script(
            "return [...document.querySelectorAll('#predicted-list .chip.shared')]"
            ".map(x => x.dataset.finding)"
        )
    )
    for c in shown:
        assert set(c["shared"]) == set(c["findings"]) & predicted, c
        assert all(t.startswith("✓") for t in chip_texts(driver, c["id"], shared=True))
    assert by_id(driver, "query-figure").is_displayed()
    assert by_id(driver, "heatmap-controls").is_displayed()
    thumbs = "#gallery .card img.thumb"
    wait_for(driver, lambda d: all(loaded_images(d, thumbs)), "the thumbnails")
    assert len(loaded_images(driver, thumbs)) == 8
    driver.save_screenshot(str(shots / "viewer-gallery.png"))

    driver.find_elements("css selector", "#gallery .card")[1].click()
    dialog = by_id(driver, "compare")
    wait_for(driver, lambda d: dialog.get_attribute("open") is not None, "the side-by-side view")
    assert shown[1]["id"] in by_id(driver, "compare-case-caption").text
    assert by_id(driver, "compare-query").size["width"] > 300  # the query at full size
    wait_for(driver, lambda d: loaded_images(d, "#compare-case") == [64], "the case's film")
    assert by_id(driver, "compare-case").size["width"] > 300
    driver.save_screenshot(str(shots / "viewer-compare.png"))
    by_id(driver, "compare-close").click()
    wait_for(driver, lambda d: dialog.get_attribute("open") is None, "the view to close")

    counts: dict[str, int] = {}
    for c in shown:
        for name in set(c["findings"]):
            counts[name] = counts.get(name, 0) + 1
    rare = min(counts, key=lambda n: (counts[n], n))  # a finding some cards lack
    assert counts[rare] < len(shown)
    from selenium.webdriver.support.ui import Select

    select = Select(by_id(driver, "finding-filter"))
    after_search(driver, lambda: select.select_by_value(rare), "the filtered search")
    assert f"with {rare}" in by_id(driver, "gallery-summary").text
    kept = cards(driver)
    assert all(rare in set(c["findings"]) for c in kept), kept
    before = [c["id"] for c in shown if rare in set(c["findings"])]
    # the server looked further than k: the cases shown before come first, then others
    assert len(kept) >= len(before) and [c["id"] for c in kept][: len(before)] == before
    ranks = driver.execute_script(
        "return [...document.querySelectorAll('#gallery .rank')].map(r => r.textContent)"
    )
    assert ranks == [f"#{i + 1}" for i in range(len(kept))]
    driver.save_screenshot(str(shots / "viewer-filter.png"))
    assert csp_violations(driver) == []


def test_a_bad_file_gets_a_clear_message(driver, base_url, phantom_dir, tmp_path, shots) -> None:
    open_viewer(driver, base_url)
    upload(driver, sorted((phantom_dir / "images").glob("*.png"))[0])
    assert cards(driver)
    fake = tmp_path / "scan.png"
    fake.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")
    upload(driver, fake)
    message = by_id(driver, "message")
    assert message.is_displayed()
    assert "could not be read as a radiograph" in message.text
    assert "PNG, JPEG or DICOM" in message.text
    assert cards(driver) == []  # the previous film's cases are not left beside the message
    assert not by_id(driver, "query-figure").is_displayed()
    driver.save_screenshot(str(shots / "viewer-bad-file.png"))


def focus_order(driver: Any, presses: int) -> list[str]:
    """The id (or class) of each element Tab reaches from the top of the page."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.activeElement && document.activeElement.blur()")
    reached = []
    for _ in range(presses):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        reached.append(
            driver.execute_script(
                "const a = document.activeElement; return a.id || a.className || a.tagName"
            )
        )
    return reached


def test_keyboard_reaches_and_operates_the_controls(driver, base_url, phantom_dir) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_viewer(driver, base_url)
    upload(driver, sorted((phantom_dir / "images").glob("*.png"))[3])
    order = focus_order(driver, 40)
    for control in ("file-input", "k-input", "finding-filter", "rerank-select", "card"):
        assert control in order, (control, order)
    assert order.index("file-input") < order.index("k-input") < order.index("card")

    k_input = by_id(driver, "k-input")
    k_input.send_keys(Keys.CONTROL, "a")
    k_input.send_keys("5")
    after_search(driver, lambda: k_input.send_keys(Keys.ENTER), "Enter in k")
    assert len(cards(driver)) == 5

    first = driver.find_elements("css selector", "#gallery .card")[0]
    driver.execute_script("arguments[0].focus()", first)
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    dialog = by_id(driver, "compare")
    wait_for(driver, lambda d: dialog.get_attribute("open") is not None, "Enter to open a case")
    assert driver.execute_script("return document.activeElement.id") == "compare-close"
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    wait_for(driver, lambda d: dialog.get_attribute("open") is None, "Esc to close it")
    assert (
        driver.execute_script("return document.activeElement.dataset.caseId")
        == cards(driver)[0]["id"]
    )

    arrow = lambda: by_id(driver, "finding-filter").send_keys(Keys.ARROW_DOWN)  # noqa: E731
    after_search(driver, arrow, "a filter chosen by the arrow key")
    chosen = driver.execute_script("return document.getElementById('finding-filter').value")
    assert chosen and f"with {chosen}" in by_id(driver, "gallery-summary").text
    assert all(chosen in c["findings"] for c in cards(driver))


def test_dicom_window_level_and_heat_map(driver, base_url, phantom_dir, tmp_path, shots) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ramp = np.tile(np.linspace(0, 4095, 128), (128, 1))  # dark left, bright right
    path = write_dicom(
        tmp_path / "ramp.dcm",
        ramp,
        bits=12,
        WindowCenter="2048",
        WindowWidth="400",
        PatientName="DOE^JANE",
        PatientID="MRN0012345",
    )
    open_viewer(driver, base_url)
    upload(driver, path)
    assert cards(driver), "a DICOM query finds cases"
    assert "DOE" not in driver.page_source and "MRN0012345" not in driver.page_source
    assert by_id(driver, "window-controls").is_displayed()
    assert by_id(driver, "query-caption").text.startswith("DICOM 128×128")
    with_heat = pixel(driver, 64, 64)

    by_id(driver, "heat-opacity").send_keys(Keys.HOME)  # the heat-map off, by keyboard
    assert by_id(driver, "heat-opacity-value").text == "0 %"
    assert pixel(driver, 64, 64) != with_heat
    # The file's narrow window (2048 ± 200 of 4095) saturates both ends of the ramp.
    assert pixel(driver, 10, 64) == [0, 0, 0] and pixel(driver, 118, 64) == [255, 255, 255]
    by_id(driver, "wl-width").send_keys(Keys.END)  # the widest window shows both ends
    assert 0 < pixel(driver, 10, 64)[0] < 60 and 200 < pixel(driver, 118, 64)[0] < 255
    by_id(driver, "wl-reset").send_keys(Keys.ENTER)
    assert pixel(driver, 10, 64) == [0, 0, 0] and pixel(driver, 118, 64) == [255, 255, 255]

    level_before = int(by_id(driver, "wl-center-value").text)
    by_id(driver, "query-canvas").send_keys(Keys.ARROW_UP)  # the film itself takes arrows
    assert int(by_id(driver, "wl-center-value").text) > level_before
    width_before = by_id(driver, "wl-width-value").text
    canvas = by_id(driver, "query-canvas")
    ActionChains(driver).click_and_hold(canvas).move_by_offset(60, 0).release().perform()
    set_width = by_id(driver, "wl-width-value").text
    assert int(set_width) > int(width_before)  # drag right: wider
    k_input = by_id(driver, "k-input")
    k_input.send_keys(Keys.CONTROL, "a")
    k_input.send_keys("3")
    after_search(driver, lambda: k_input.send_keys(Keys.ENTER), "the same film, k = 3")
    assert len(cards(driver)) == 3
    assert by_id(driver, "wl-width-value").text == set_width  # the reader's window is kept
    assert csp_violations(driver) == []

    film = np.asarray(Image.open(sorted((phantom_dir / "images").glob("*.png"))[9]).convert("L"))
    dicom = write_dicom(
        tmp_path / "film.dcm", film.astype(np.float64) * 16, WindowCenter="2400", WindowWidth="2800"
    )
    open_viewer(driver, base_url)
    upload(driver, dicom)  # a film as a 12-bit DICOM with its own window, for the docs
    assert by_id(driver, "query-caption").text.startswith("DICOM 64×64")
    driver.execute_script("document.getElementById('query-figure').scrollIntoView()")
    driver.save_screenshot(str(shots / "viewer-dicom.png"))


def test_a_film_dropped_on_the_zone_is_searched(driver, base_url, phantom_dir) -> None:
    film = sorted((phantom_dir / "images").glob("*.png"))[11]
    open_viewer(driver, base_url)
    drop = """
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], 'film.png', {type: 'image/png'}));
        const zone = document.getElementById('drop-zone');
        for (const type of ['dragenter', 'dragover', 'drop']) {
          zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true,
                                                  cancelable: true}));
        }"""
    encoded = base64.b64encode(film.read_bytes()).decode()
    after_search(driver, lambda: driver.execute_script(drop, encoded), "the dropped film")
    shown = cards(driver)
    assert len(shown) == 10 and shown[0]["distance"].startswith("distance 0")
    assert "over" not in by_id(driver, "drop-zone").get_attribute("class")


def test_no_close_match_is_said_above_the_gallery(
    driver, base_url, phantom_dir, tmp_path, shots
) -> None:
    """Noise is far from every phantom film: the answer's ``closeness`` says so, and the
    page shows its message above the cases (which are still listed); a film of the archive's
    kind shows no such warning."""
    noise = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(noise)
    open_viewer(driver, base_url)
    upload(driver, noise)
    banner = by_id(driver, "closeness")
    assert banner.is_displayed() and banner.text.startswith("no close match in this archive: ")
    assert banner.location["y"] < by_id(driver, "gallery").location["y"]
    assert len(cards(driver)) == 10  # the cases are still listed, below the warning
    driver.save_screenshot(str(shots / "viewer-no-close-match.png"))
    upload(driver, sorted((phantom_dir / "images").glob("*.png"))[5])
    assert not banner.is_displayed() and cards(driver)
