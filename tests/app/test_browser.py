"""The dashboard in a real browser: `streamlit run app.py` on a free port with a tiny model, driven by Debian's
chromium through Playwright. Lands on Quantize (nothing starts until Measure), moves a slider, waits for the chart
to change, downloads an exported PNG and checks it, and saves a screenshot of every page (the folder is printed);
on a deeper tiny model, watches the progress bar advance block by block through a calibrated modification.

Never `playwright install`: the browser is Debian's /usr/bin/chromium (`make test` installs it).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from dashboard_env import make_env

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("HEMLAB_CHROME", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
LAUNCH_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# navigation label -> the page's heading (each page is opened by clicking its link, as a user would)
PAGES = {
    "Quantize": "Quantize",
    "Prune": "Prune",
    "Decode": "Decode",
    "Depth": "Depth",
    "Mitigate": "Mitigate",
    "Model": "Model & measurement",
    "Layers": "Layers: where the information is lost",
    "Attention": "Attention disruption",
    "Divergence": "Divergence: what the model now predicts",
    "Tasks": "Tasks: accuracy on real benchmarks, and the answers that flipped",
    "Sweeps & thresholds": "Sweeps & thresholds",
    "Compare & history": "Compare & history",
    "Paper": "The paper's results, beside ours",
}

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; AssertionError if it is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama_dir):
    yield from _serve(tmp_path_factory.mktemp("browser-app"), tiny_llama_dir)


@pytest.fixture(scope="module")
def deep_llama_dir(tmp_path_factory, tiny_tokenizer):
    """A 32-block tiny Llama: a calibrated modification then takes long enough for a bar to be watched."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=32,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("deep-llama")
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def deep_server(tmp_path_factory, deep_llama_dir):
    yield from _serve(tmp_path_factory.mktemp("browser-deep"), deep_llama_dir)


def _serve(root: Path, model_dir: Path):
    """`streamlit run app.py` on a free port with the app pointed at `model_dir`; yields its URL."""
    env = {**os.environ, **make_env(root, model_dir)}
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # fmt: skip
    log = open(root / "streamlit.log", "w")  # noqa: SIM115 (closed in the teardown)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.terminate()
        pytest.fail("streamlit did not start: " + (root / "streamlit.log").read_text()[-2000:])
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


def _wait_drawn(page, title: str, charts: int = 0, timeout_ms: int = 90_000) -> None:
    """Wait until the script has finished and its output is drawn: the app's own navigation (not the legacy
    pages/ list), the page heading, at least `charts` plotly charts, no stale element, and the app idle for a
    second (a page may rerun itself once, e.g. on the first deep link of a process)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Sweeps & thresholds").wait_for(
        timeout=timeout_ms
    )
    page.get_by_role("heading", name=title).first.wait_for(timeout=timeout_ms)
    idle = '[data-testid="stApp"][data-test-script-state="notRunning"]'
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        page.wait_for_selector(idle, timeout=timeout_ms)
        page.wait_for_timeout(600)
        if page.locator(idle).count():
            break
    if charts:
        page.wait_for_function(
            f"document.querySelectorAll('.js-plotly-plot').length >= {charts}", timeout=timeout_ms
        )
    page.wait_for_function("!document.querySelector('[data-stale=\"true\"]')", timeout=timeout_ms)


def _screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to the content first."""
    height = page.evaluate("document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
    page.set_viewport_size({"width": 1440, "height": min(int(height) + 160, 8000)})
    page.wait_for_timeout(300)  # plotly relayouts on resize
    page.screenshot(path=path)
    page.set_viewport_size({"width": 1440, "height": 1000})


def test_slider_updates_chart_png_export_and_screenshots_of_every_page(server, browser, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    page.goto(server + "/")  # the default page (Quantize) lives at the root
    _wait_drawn(page, "Quantize")
    assert page.get_by_text("press Measure", exact=False).count(), "landing starts nothing"
    assert not page.locator(".js-plotly-plot").count()
    page.get_by_role("button", name="Measure").click()
    _wait_drawn(page, "Quantize", charts=4)
    caption = page.get_by_text("RTN w8", exact=False).first
    caption.wait_for()

    # Move the bits slider one step down with the keyboard; the profile must be recomputed and redrawn.
    ppl_trace = "() => document.querySelectorAll('.js-plotly-plot')[3].data[0].y[1]"
    before = page.evaluate(ppl_trace)
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="bits").get_by_role("slider")
    slider.focus()
    slider.press("ArrowLeft")
    page.get_by_text("RTN w7", exact=False).first.wait_for(timeout=60_000)
    page.wait_for_function(f"{ppl_trace} !== {before}", timeout=60_000)
    _wait_drawn(page, "Quantize", charts=4)
    after = page.evaluate(ppl_trace)
    assert after != before, "the perplexity chart did not change after the slider moved"

    # Export the first chart as PNG: a real image of the export size (1000 px wide, the figure's height).
    with page.expect_download(timeout=60_000) as download:
        # Our export button (plotly's own modebar also offers a PNG of the on-screen chart).
        page.locator('[data-testid="stDownloadButton"]').filter(has_text="PNG").first.click()
    path = tmp_path / "chart.png"
    download.value.save_as(path)
    assert download.value.suggested_filename == "quant-layer-loss.png"
    assert png_size(path.read_bytes()) == (1000, 560)

    seconds = {}
    for label, title in PAGES.items():
        t0 = time.monotonic()
        page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()
        _wait_drawn(page, title)
        assert not page.locator('[data-testid="stException"]').count(), f"{label} raised an exception"
        assert not page.get_by_text("Page not found").count(), f"{label} was not found"
        _screenshot(page, SHOTS / f"{label.split()[0].lower()}.png")
        seconds[label] = round(time.monotonic() - t0, 1)
    # Click a heatmap cell on the Attention page: the inspected layer and head follow the click.
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Attention", exact=True).click()
    _wait_drawn(page, "Attention disruption", charts=1)
    heading = page.get_by_text("Attention maps — layer").first
    seen = {heading.inner_text()}
    area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    for layer, head in ((0, 0), (1, 3)):  # the tiny model has 2 layers x 4 heads
        page.mouse.click(
            area["x"] + area["width"] * (head + 0.5) / 4, area["y"] + area["height"] * (layer + 0.5) / 2
        )
        _wait_drawn(page, "Attention disruption", charts=1)
        seen.add(heading.inner_text())
    assert "Attention maps — layer 1, head 3" in seen and len(seen) >= 2, seen
    print(f"\nscreenshots of every page: {SHOTS}\nseconds per page: {seconds}")


# Every change of the progress bar, as the browser renders it: (aria-valuenow, text).
RECORD_PROGRESS = """() => {
  window.__progress = [];
  new MutationObserver(() => {
    for (const bar of document.querySelectorAll('[data-testid="stProgress"]')) {
      const meter = bar.querySelector('[role="progressbar"]');
      const entry = [meter ? Number(meter.getAttribute('aria-valuenow')) : null, bar.innerText];
      const last = window.__progress[window.__progress.length - 1];
      if (!last || last[0] !== entry[0] || last[1] !== entry[1]) window.__progress.push(entry);
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def test_the_progress_bar_advances_block_by_block_through_a_calibrated_modification(deep_server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(deep_server + "/")
    _wait_drawn(page, "Quantize")
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Prune", exact=True).click()
    _wait_drawn(page, "Prune")
    method = page.locator('[data-testid="stSelectbox"]').filter(has_text="method").last
    method.click()
    page.keyboard.type("wanda")
    page.keyboard.press("Enter")
    _wait_drawn(page, "Prune")
    assert page.get_by_text("calibrates on text", exact=False).count(), (
        "a calibrated setting waits for Measure"
    )
    page.evaluate(RECORD_PROGRESS)
    page.get_by_role("button", name="Measure").click()
    _wait_drawn(page, "Prune", charts=4, timeout_ms=240_000)
    seen = page.evaluate("window.__progress")
    blocks = [(value, text) for value, text in seen if "wanda block" in text]
    names = {text.split("wanda block ")[1].split(" ")[0] for _, text in blocks}
    print(
        f"\nprogress bar states seen: {len(seen)}; wanda blocks named: {sorted(names, key=lambda n: int(n.split('/')[0]))}"
    )
    assert len(names) >= 3, f"the bar named too few blocks: {seen}"
    values = [value for value, _ in seen if value is not None]
    assert values == sorted(values) and values[-1] > values[0], values
    assert any("left" in text for _, text in seen), "an estimate of the time left was shown"


def _pages_in_theme(page, theme: str) -> dict[str, float]:
    """Open every page by its link, check it drew without an exception, and save a full-page screenshot under
    artifacts/screenshots/<theme>/; returns the seconds each page took."""
    folder = SHOTS / theme
    folder.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for label, title in PAGES.items():
        t0 = time.monotonic()
        page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()
        _wait_drawn(page, title)
        assert not page.locator('[data-testid="stException"]').count(), f"{label} raised ({theme})"
        _screenshot(page, folder / f"{label.split()[0].lower()}.png")
        seconds[label] = round(time.monotonic() - t0, 1)
    return seconds


def test_attention_click_through_keeps_the_chosen_cell_when_the_maps_are_shown(server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(server + "/attention")
    _wait_drawn(page, "Attention disruption", charts=1)
    heading = page.get_by_text("Attention maps — layer").first
    # Click the least disrupted cell: the page starts on the most disrupted one, so a page that forgets the click
    # and falls back to its default shows a different cell.
    # plotly.py sends arrays base64-encoded; plotly.js's full data holds them decoded.
    z = page.evaluate(
        "Array.from(document.querySelectorAll('.js-plotly-plot')[0]._fullData[0].z, r => Array.from(r))"
    )
    n_layers, n_heads = len(z), len(z[0])
    layer, head = min(((i, j) for i in range(n_layers) for j in range(n_heads)), key=lambda c: z[c[0]][c[1]])
    area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    x = area["x"] + area["width"] * (head + 0.5) / n_heads
    page.mouse.click(x, area["y"] + area["height"] * (layer + 0.5) / n_layers)
    _wait_drawn(page, "Attention disruption", charts=1)
    chosen = f"Attention maps — layer {layer}, head {head}"
    assert heading.inner_text() == chosen
    page.get_by_role("button", name="Show the maps").click()
    _wait_drawn(page, "Attention disruption", charts=2)
    assert heading.inner_text() == chosen, "Show the maps kept the clicked cell"
    title = page.evaluate("document.querySelectorAll('.js-plotly-plot')[1].layout.title.text")
    assert f"layer {layer}, head {head}" in title, title
    # Another interaction (a metric) keeps it too.
    page.get_by_test_id("stRadioGroup").get_by_text("sink mass (modified)", exact=True).click()
    _wait_drawn(page, "Attention disruption", charts=2)
    assert heading.inner_text() == chosen
    page.close()


def _luminance(css_colour: str) -> float:
    r, g, b = (int(v) for v in css_colour[css_colour.index("(") + 1 : css_colour.index(")")].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def test_dark_theme_follows_the_browser_and_charts_stay_readable(server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, color_scheme="dark")
    page.goto(server + "/")
    _wait_drawn(page, "Quantize", charts=4)
    app = page.evaluate("getComputedStyle(document.querySelector('[data-testid=\"stApp\"]')).backgroundColor")
    assert _luminance(app) < 0.3, f"the app is dark when the browser prefers dark ({app})"
    tick = page.evaluate("getComputedStyle(document.querySelector('.js-plotly-plot .xtick text')).fill")
    assert _luminance(tick) > 0.5, f"chart text is light on the dark page ({tick})"
    paper = page.evaluate("document.querySelectorAll('.js-plotly-plot')[0].layout.paper_bgcolor")
    assert paper == "rgba(0,0,0,0)", "charts are transparent: the page's own background shows"
    seconds = _pages_in_theme(page, "dark")
    print(f"\ndark screenshots: {SHOTS / 'dark'}\nseconds per page: {seconds}")
    page.close()


def test_report_opens_with_its_summary(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    page.goto(server + "/compare")
    _wait_drawn(page, "Compare & history")
    page.locator('[data-testid="stMultiSelect"]').filter(has_text="pick runs by name").click()
    page.get_by_role("option").first.click()
    page.keyboard.press("Escape")
    _wait_drawn(page, "Compare & history", charts=3)
    with page.expect_download(timeout=120_000) as download:
        page.locator('[data-testid="stDownloadButton"]').filter(has_text="Report (HTML)").click()
    path = tmp_path / "report.html"
    download.value.save_as(path)
    page.goto(path.as_uri())
    headings = page.locator("h2").all_inner_texts()
    assert headings[0] == "Summary" and headings.index("Charts") < len(headings) - 1, headings
    assert page.locator(".verdict").inner_text().strip(), "the summary says a verdict"
    assert "Appendix" in headings[-1], headings
    page.close()
