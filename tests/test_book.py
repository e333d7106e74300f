"""The book (``make book``), built from the committed notebooks and read in a real browser.

The test builds the site, serves ``build/book/`` on 127.0.0.1 and drives headless Chromium (Debian's
``chromium`` and ``chromium-driver``, through Selenium): the landing page lists the ten chapters;
every chapter loads with no console error and no request that fails or leaves 127.0.0.1, shows
all its figures, typesets its formulas (no raw ``$...$`` left), and the search finds "dilation"
in chapter 03. A screenshot of chapter 02 is saved as ``build/book/screenshot-02.png``.
"""
import functools
import http.server
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from browser import chromium

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "build" / "book"
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def book():
    pytest.importorskip("sphinx", reason="the book needs the docs extra: pip install -e .[docs]")
    pytest.importorskip("myst_nb", reason="the book needs the docs extra: pip install -e .[docs]")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "book.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr  # warnings are errors
    return BOOK


@pytest.fixture(scope="module")
def server(book):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(server):
    with chromium(logs=True) as driver:   # tests/browser.py: skips with the reason where there is none
        driver.set_page_load_timeout(60)
        yield driver


def _requests(driver) -> tuple[list[str], list[str]]:
    """(every URL the page asked for, the ones that failed) since the last call."""
    urls, failed, ids = [], [], {}
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.requestWillBeSent":
            url = params["request"]["url"]
            ids[params["requestId"]] = url
            urls.append(url)
        elif msg["method"] == "Network.loadingFailed":
            failed.append(f"{ids.get(params['requestId'], '?')}: {params.get('errorText')}")
        elif msg["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            failed.append(f"{params['response']['url']}: HTTP {params['response']['status']}")
    return urls, failed


def _open(driver, url: str) -> None:
    driver.get_log("performance")
    driver.get_log("browser")
    driver.get(url)
    deadline = time.time() + 30
    while time.time() < deadline and driver.execute_script("return document.readyState") != "complete":
        time.sleep(0.1)


def test_the_landing_page_lists_every_chapter(browser, server):
    _open(browser, f"{server}/index.html")
    links = {a.get_attribute("href").split("/")[-1] for a in browser.find_elements("css selector", "a[href]")}
    missing = [c for c in CHAPTERS if f"{c}.html" not in links]
    assert len(CHAPTERS) == len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))) >= 11 and not missing, missing
    text = browser.find_element("tag name", "body").text
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_chapter_loads_offline_with_its_figures_and_formulas(browser, server, chapter):
    _open(browser, f"{server}/chapters/{chapter}.html")
    time.sleep(0.5)
    # MathJax typesets after the page has loaded: wait for it when the page has formulas
    source = (ROOT / "notebooks" / f"{chapter}.ipynb").read_text(encoding="utf-8")
    has_math = bool(re.search(r"\$[^$\n]+\$", "".join(
        c["source"] if isinstance(c["source"], str) else "".join(c["source"])
        for c in json.loads(source)["cells"] if c["cell_type"] == "markdown")))
    if has_math:
        deadline = time.time() + 20
        while time.time() < deadline and not browser.find_elements("css selector", "mjx-container"):
            time.sleep(0.2)
        assert browser.find_elements("css selector", "mjx-container"), "formulas were not typeset"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    urls, failed = _requests(browser)
    assert not failed, failed
    outside = [u for u in urls if not u.startswith((server, "data:", "blob:", "about:"))]
    assert not outside, outside
    images = browser.find_elements("css selector", "article img")
    assert images, "no figures on the page"
    broken = [i.get_attribute("src")[:80] for i in images
              if not browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)]
    assert not broken, broken
    no_alt = [i.get_attribute("src")[-30:] for i in images if not (i.get_attribute("alt") or "").strip()]
    assert not no_alt, f"figures without alt text: {no_alt}"
    text = browser.find_element("css selector", "article").text
    assert not re.search(r"\$[^$\n]{1,80}\$", text), "raw $...$ left in the page"
    assert "Open In Colab" in browser.page_source and f"{chapter}.ipynb" in browser.page_source
    assert browser.execute_script(         # the Colab set-up code is folded, the lesson comes first
        "return [...document.querySelectorAll('details.above-input')]"
        ".some(d => !d.open && d.textContent.includes('bring the course along'))"), "set-up cell not folded"
    if chapter.startswith("02"):  # the whole page, at half size: its formulas and figures
        import base64
        height = browser.execute_script("return document.documentElement.scrollHeight")
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 0.5}})
        (BOOK / "screenshot-02.png").write_bytes(base64.b64decode(shot["data"]))


def test_the_search_finds_dilation_in_chapter_03(browser, server):
    _open(browser, f"{server}/search.html?q=dilation")
    deadline = time.time() + 30
    found = []
    while time.time() < deadline and not found:
        time.sleep(0.3)
        found = [a.get_attribute("href") for a in browser.find_elements("css selector", "#search-results a")
                 if "03_why_k21_d3" in (a.get_attribute("href") or "")]
    assert found, "chapter 03 is not among the search results for 'dilation'"
