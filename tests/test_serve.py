"""``pdfnet serve``: the HTTP API and the page against a real server on 127.0.0.1 (the tiny models of conftest.py),
the README's curl and gradio_client examples, the checks made before Gradio is imported, the package without
Gradio, and, where Debian's Chromium is installed, the page in a headless browser. Nothing is fetched online."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pdfnet.cli import main
from pdfnet.io import example_image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = example_image()
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# telemetry off: Gradio and gradio_client otherwise report to api.gradio.app and huggingface.co
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}
needs_gradio = pytest.mark.skipif(
    not (importlib.util.find_spec("gradio") and importlib.util.find_spec("gradio_client")),
    reason='needs Gradio: pip install "pdfnet[app]"',
)
needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason=f"needs headless Chromium at {CHROMIUM} and {CHROMEDRIVER}: apt-get install -y chromium chromium-driver",
)

# The README's curl example, word for word after its first line (URL and IMAGE come from the environment here).
CURL_EXAMPLE = r"""
# 1. upload the image; the answer is its path on the server: ["/tmp/gradio/<hash>/cat.jpg"]
FILE=$(curl -sSf -F "files=@$IMAGE" $URL/gradio_api/upload | sed -E 's/^\["(.*)"\]$/\1/')
# 2. start a job with {"data": [the image]}; the answer is {"event_id": "<id>"}
EVENT=$(curl -sSf -H 'Content-Type: application/json' \
  -d '{"data": [{"path": "'"$FILE"'", "meta": {"_type": "gradio.FileData"}}]}' \
  $URL/gradio_api/call/predict | sed -E 's/.*"event_id": ?"([^"]+)".*/\1/')
# 3. wait for its result, as server-sent events ("event: complete", then a "data:" line with one {"url": ...}
#    per PNG; or "event: error" and the message), and download the PNGs by their urls
curl -sSfN $URL/gradio_api/call/predict/$EVENT | tee events.txt | grep '^data:' | grep -oE '"url": ?"[^"]+"' |
  cut -d'"' -f4 | xargs -r -n1 curl -sSfO
"""


def make_image(path: Path, size: tuple[int, int] = (333, 217)) -> Path:
    """A yellow ellipse on a colour ramp, ``size`` = (width, height)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = xx * 255 // max(w - 1, 1)
    rgb[..., 2] = yy * 255 // max(h - 1, 1)
    rgb[((xx - w / 2) / (w / 4)) ** 2 + ((yy - h / 2) / (h / 4)) ** 2 < 1] = (250, 240, 40)
    Image.fromarray(rgb).save(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture(scope="module")
def server(tiny_official_checkpoint, tiny_depth_model, tmp_path_factory):
    """The issue's command line, on a free port; its temporary files under a pytest folder."""
    work = tmp_path_factory.mktemp("serve")
    port = free_port()
    command = [sys.executable, "-m", "pdfnet", "serve", "--weights", tiny_official_checkpoint]
    command += ["--depth-model", tiny_depth_model, "--input-size", "256", "--device", "cpu"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, **OFFLINE_ENV, "GRADIO_TEMP_DIR": str(work / "gradio"), "TMPDIR": str(work)}
    log = work / "server.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    s = Server(f"http://127.0.0.1:{port}/", proc, log)
    deadline = time.monotonic() + 120
    while not _answers(s.url):
        if not s.alive() or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not start:\n{s.log_text()}")
        time.sleep(0.2)
    yield s
    proc.terminate()  # SIGTERM stops it as Ctrl+C does
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module", autouse=True)
def _no_telemetry():
    """This process's gradio_client reports nowhere: Gradio's switch is read per client, the Hub's when
    huggingface_hub is imported (perhaps already, by another test), so its constant is set too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        constants = pytest.importorskip("huggingface_hub.constants")
        mp.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        yield


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False, download_files=str(server.log.parent / "downloads"))


# ---------------------------------------------------------------------------------------------- before Gradio


def test_the_package_and_other_commands_work_without_gradio():
    """With Gradio unimportable: ``import pdfnet``, the parser (every command) and ``serve --help`` work, and
    ``serve`` says in one line what to install."""
    code = (
        "import sys; sys.modules['gradio'] = None\n"  # an import of gradio now raises ImportError
        "import pdfnet, pdfnet.cli; pdfnet.Predictor; pdfnet.cli.build_parser()\n"
        "assert pdfnet.cli.main(['serve', '--device', 'cpu']) == 1\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stderr == 'error: pdfnet serve needs Gradio, which is not installed: pip install "pdfnet[app]"\n'


@needs_gradio
def test_bad_arguments_are_refused_before_gradio_is_imported(tiny_official_checkpoint, tmp_path, capsys, monkeypatch):
    # importing the page (and so Gradio) would now fail with another message: each error below comes first
    monkeypatch.setitem(sys.modules, "pdfnet.app.page", None)
    port = str(free_port())
    assert main(["serve", "--weights", str(tmp_path / "nope.pth"), "--device", "cpu", "--port", port]) == 1
    assert capsys.readouterr().err == f"error: no checkpoint at {tmp_path / 'nope.pth'}\n"
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    assert main(["serve", "--weights", str(junk), "--device", "cpu", "--port", port]) == 1
    assert capsys.readouterr().err.startswith(f"error: {junk} is a text file, not a checkpoint")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        assert main(["serve", "--weights", tiny_official_checkpoint, "--device", "cpu", "--port", busy]) == 1
    assert (
        capsys.readouterr().err
        == f"error: port {busy} on 127.0.0.1 is in use (another server?); choose another --port\n"
    )
    with pytest.raises(SystemExit) as exit_status:
        main(["serve", "--port", "70000"])
    assert exit_status.value.code == 2 and "expected a port from 1 to 65535" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- models, no server


def test_model_choices_without_loading_anything(tiny_official_checkpoint, tiny_depth_model):
    from pdfnet.app.models import ModelCache
    from pdfnet.errors import InputError

    published = ModelCache("base", "Small", "cpu")
    assert [value for _, value in published.weight_choices] == ["base", "general"]
    assert [value for _, value in published.depth_choices] == ["small", "base", "large"]
    assert (published.default_weights, published.default_depth) == ("base", "small")
    with pytest.raises(InputError, match="unknown depth model 'huge'; choose one of small, base, large"):
        published.predictor("base", "huge")
    local = ModelCache(tiny_official_checkpoint, tiny_depth_model, "cpu")
    assert [value for _, value in local.weight_choices] == ["local", "base", "general"]
    assert (local.default_weights, local.default_depth) == ("local", "local")
    assert local.short_names("local", "local") == ("PDFNet_tiny.pth", Path(tiny_depth_model).name)
    assert ModelCache("general", "me/my-depth", "cpu").depth_choices[-1] == ("me/my-depth", "me/my-depth")


def test_refinement_is_asked_for_where_cutout_takes_it():
    from pdfnet.app.models import cutout_rgba

    image, depth = np.zeros((4, 5, 3), np.uint8), np.full((4, 5), 9, np.uint8)

    class Plain:  # a Predictor before pdfnet.refine_foreground
        def cutout(self, image, depth=None):
            return np.dstack([image, depth])

    class Refining:
        def cutout(self, image, depth=None, refine=False):
            self.refine = refine
            return np.dstack([image + refine, depth])

    rgba, note = cutout_rgba(Plain(), image, depth, refine=True)
    assert rgba.shape == (4, 5, 4) and "not available" in note
    assert cutout_rgba(Plain(), image, depth, refine=False)[1] == ""
    refining = Refining()
    rgba, note = cutout_rgba(refining, image, depth, refine=True)
    assert refining.refine is True and rgba[0, 0, 0] == 1 and note == ""


# ---------------------------------------------------------------------------------------------- the HTTP API


@needs_gradio
def test_predict_returns_the_cutout_and_mask_at_the_input_size(client, tmp_path):
    from gradio_client import handle_file

    for image in (EXAMPLE, make_image(tmp_path / "ellipse.png", (333, 217))):
        cutout, mask, depth = client.predict(handle_file(str(image)), api_name="/predict")
        size = Image.open(image).size
        with Image.open(cutout) as c, Image.open(mask) as m, Image.open(depth) as d:
            assert (c.mode, c.size, m.mode, m.size, d.mode, d.size) == ("RGBA", size, "L", size, "L", size)
            assert np.array_equal(np.asarray(c)[..., 3], np.asarray(m))  # the cutout's alpha is the mask
            # the colours are the foreground's (refined by default, as pdfnet predict): the photo's where opaque
            rgb, photo = np.asarray(c)[..., :3], np.asarray(Image.open(image).convert("RGB"))
            opaque = np.asarray(m) == 255
            assert np.array_equal(rgb[opaque], photo[opaque])
        assert Path(cutout).name == f"{image.stem}-cutout.png" and Path(mask).name == f"{image.stem}-mask.png"


@needs_gradio
def test_predict_with_options_and_the_listed_endpoints(client, tmp_path):
    from gradio_client import handle_file

    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(api) == {"/predict", "/predict_with_options"}
    assert [p["parameter_name"] for p in api["/predict"]["parameters"]] == ["image"]
    defaults = {p["parameter_name"]: p["parameter_default"] for p in api["/predict_with_options"]["parameters"]}
    assert defaults == {
        "image": None,
        "tta": False,
        "refine_foreground": True,
        "depth_model": "local",
        "weights": "local",
    }

    image = handle_file(str(make_image(tmp_path / "options.jpg", (200, 150))))
    # refine_foreground works whether or not this version's Predictor.cutout refines (then it is ignored)
    cutout, mask, _ = client.predict(image, tta=True, refine_foreground=False, api_name="/predict_with_options")
    assert Image.open(mask).size == (200, 150)
    photo = np.asarray(Image.open(make_image(tmp_path / "options.jpg", (200, 150))).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(cutout))[..., :3], photo)  # not refined: the photo's colours
    with pytest.raises(Exception, match="unknown weights 'huge'; choose one of local, base, general"):
        client.predict(image, weights="huge", api_name="/predict_with_options")


@needs_gradio
def test_a_non_image_is_an_error_and_the_server_keeps_serving(server, client, tmp_path):
    from gradio_client import handle_file

    (tmp_path / "notes.png").write_text("not really a png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(EXAMPLE.read_bytes()[:100_000])
    for name, message in [
        ("notes.png", "notes.png is not an image"),
        ("empty.jpg", "empty.jpg is not an image"),
        ("truncated.png", "Cannot use this upload: cannot read image truncated.png: "),  # no server path shown
    ]:
        with pytest.raises(Exception, match=message):
            client.predict(handle_file(str(tmp_path / name)), api_name="/predict")
    sliver = make_image(tmp_path / "sliver.png", (2000, 3))
    with pytest.raises(Exception, match="Cannot cut out sliver.png: a 2000x3 image is too elongated"):
        client.predict(handle_file(str(sliver)), api_name="/predict")
    assert server.alive()
    _, mask, _ = client.predict(handle_file(str(make_image(tmp_path / "ok.png", (90, 70)))), api_name="/predict")
    assert Image.open(mask).size == (90, 70)


@needs_gradio
def test_one_request_at_a_time_and_the_models_loaded_once(server, tmp_path):
    """Two clients at once: the second cutout starts when the first has finished (one queue per device)."""
    from gradio_client import Client, handle_file

    images = [handle_file(str(make_image(tmp_path / f"queue{i}.png", (640, 480)))) for i in range(2)]
    threads = [
        threading.Thread(
            target=Client(server.url, verbose=False).predict, args=(image,), kwargs={"api_name": "/predict"}
        )
        for image in images
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    events = [line.split(" ", 1)[1] for line in server.log_text().splitlines() if "queue" in line and " cut" in line]
    assert len(events) == 4
    for start, end in zip(events[::2], events[1::2]):  # each start is followed by its own end
        assert start.startswith("cutting out queue") and end.startswith(f"cut out {start.split()[-1]} ")
    log = server.log_text()
    assert log.count("loaded weights") == 1 and log.count("loaded depth model") == 1


@needs_gradio
def test_page_and_telemetry(server):
    with urllib.request.urlopen(server.url, timeout=10) as r:
        assert "PDFNet · cut out the main object" in r.read().decode()  # the title, set by the page's script
    with urllib.request.urlopen(server.url + "config", timeout=10) as r:
        config = json.load(r)
    assert config["analytics_enabled"] is False and config["title"].startswith("PDFNet")


# ---------------------------------------------------------------------------------------------- README examples


@needs_gradio
def test_readme_gradio_client_example(server, monkeypatch, tmp_path):
    from gradio_client import Client, handle_file

    monkeypatch.chdir(tmp_path)
    client = Client(server.url, download_files="outputs")  # where the PNGs are saved
    cutout, mask, depth = client.predict(handle_file(str(EXAMPLE)), api_name="/predict")
    cutout, mask, depth = client.predict(handle_file(str(EXAMPLE)), tta=True, api_name="/predict_with_options")
    assert Image.open(mask).size == Image.open(EXAMPLE).size


@needs_gradio
@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("bash")), reason="needs curl and bash")
def test_readme_curl_example(server, tmp_path):
    env = {**os.environ, "URL": server.url.rstrip("/"), "IMAGE": str(EXAMPLE)}
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", CURL_EXAMPLE], cwd=tmp_path, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "chelsea-cutout.png",
        "chelsea-depth.png",
        "chelsea-mask.png",
    ]
    assert Image.open(tmp_path / "chelsea-mask.png").size == Image.open(EXAMPLE).size
    assert "event: complete" in (tmp_path / "events.txt").read_text()
    (tmp_path / "notes.png").write_text("not an image")
    env["IMAGE"] = str(tmp_path / "notes.png")
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", CURL_EXAMPLE], cwd=tmp_path, env=env, capture_output=True)
    events = (tmp_path / "events.txt").read_text()
    assert result.returncode != 0 and "event: error" in events and "notes.png is not an image" in events


# ---------------------------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian Chromium through Selenium, recording the page's requests; both paths given, so Selenium
    Manager never looks for a browser or driver online."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]:
        options.add_argument(flag)
    options.add_argument("--disable-background-networking")  # no update checks or other calls home
    options.add_argument("--window-size=1400,1000")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    downloads = tmp_path_factory.mktemp("downloads")
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def _open(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url)
    WebDriverWait(browser, 30).until(lambda d: "PDFNet" in d.find_element(By.TAG_NAME, "body").text)


def _upload(browser, path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, "#pdfnet-input input[type=file]").send_keys(str(path))


def _wait_status(browser, text: str, timeout: float = 30) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    status = "return document.querySelector('#pdfnet-status')?.innerText || ''"
    WebDriverWait(browser, timeout).until(lambda d: text in d.execute_script(status))


# records, from now on, every text and progress element the cutout's box shows
WATCH_PROGRESS = """
window.pdfnetSeen = [];
new MutationObserver(() => {
  const box = document.querySelector('#pdfnet-cutout');
  if (box && box.querySelector('.progress-bar, .progress-level')) window.pdfnetSeen.push(box.innerText);
}).observe(document.body, {subtree: true, childList: true, characterData: true});
"""


@needs_gradio
@needs_chromium
def test_browser_upload_shows_progress_cutout_and_full_size_downloads(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("performance")  # drop earlier entries
    _open(browser, server)
    browser.execute_script(WATCH_PROGRESS)
    _upload(browser, EXAMPLE)
    _wait_status(browser, "451×300")
    assert any("Estimating depth" in text for text in browser.execute_script("return window.pdfnetSeen"))
    for box in ("#pdfnet-cutout", "#pdfnet-mask", "#pdfnet-depth"):
        assert browser.execute_script(f"return document.querySelector('{box} img')?.naturalWidth") == 451
    checkerboard = "return getComputedStyle(document.querySelector('#pdfnet-cutout img')).backgroundImage"
    assert "conic-gradient" in browser.execute_script(checkerboard)
    for button, name, mode in [
        ("#pdfnet-dl-cutout", "chelsea-cutout.png", "RGBA"),
        ("#pdfnet-dl-mask", "chelsea-mask.png", "L"),
    ]:
        browser.find_element(By.CSS_SELECTOR, button).click()
        target = browser.downloads / name
        WebDriverWait(browser, 20).until(lambda d, t=target: t.exists() and t.stat().st_size > 0)
        time.sleep(0.2)  # the browser renames a finished download into place; let it close the file
        with Image.open(target) as image:
            assert (image.mode, image.size) == (mode, (451, 300))
    requested = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.add(message["params"]["request"]["url"])
    # the page fetches nothing from the network (chrome:// pages are the browser's own, e.g. its new tab)
    outside = {url for url in requested if url.startswith(("http:", "https:", "ws:", "wss:", "//"))}
    assert {url for url in outside if not url.startswith(("http://127.0.0.1", "ws://127.0.0.1"))} == set()


@needs_gradio
@needs_chromium
def test_browser_non_image_shows_an_error_and_the_page_keeps_working(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, server)
    fake = tmp_path / "fake.png"
    fake.write_text("plain text, named .png")
    _upload(browser, fake)
    _wait_status(browser, "Error: Cannot use this upload: fake.png is not an image")  # stays after the pop-up
    WebDriverWait(browser, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#pdfnet-input img"))
    assert server.alive()
    _upload(browser, make_image(tmp_path / "after.png", (160, 100)))
    _wait_status(browser, "160×100")


@needs_gradio
@needs_chromium
def test_browser_paste_drop_and_example(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    _open(browser, server)
    dispatch = """
        const [kind, b64, name] = arguments;
        const files = new DataTransfer();
        files.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, {type: 'image/png'}));
        if (kind === 'paste')
            document.body.dispatchEvent(new ClipboardEvent('paste', {clipboardData: files, bubbles: true}));
        else document.querySelector('#pdfnet-input').dispatchEvent(
            new DragEvent('drop', {dataTransfer: files, bubbles: true, cancelable: true}));
    """
    for kind, size in [("paste", (160, 100)), ("drop", (140, 90))]:  # the drop lands on the filled Image
        data = base64.b64encode(make_image(tmp_path / f"{kind}.png", size).read_bytes()).decode()
        browser.execute_script(dispatch, kind, data, f"{kind}.png")
        _wait_status(browser, f"{size[0]}×{size[1]}")
    browser.find_element(By.CSS_SELECTOR, "#pdfnet-examples button.gallery-item").click()
    _wait_status(browser, "451×300")
