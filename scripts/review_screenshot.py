"""A screenshot of the review page of ``pdfnet label`` for the README (``docs/review.png``), made without weights:
synthetic photos, labelled by ``pdfnet label`` itself with a stand-in for the network.

    python scripts/review_screenshot.py docs/review.png
    python scripts/review_screenshot.py shot.png --keep /tmp/labelled --height 1600

The stand-in computes its logits from each photo's colour saturation (the synthetic objects are coloured, their
backgrounds grey) plus two terms that the test-time passes see differently: a ramp across the image, which a
horizontal flip turns around, and a ripple of a fixed period in pixels, which lands elsewhere at each scale. So
the six passes disagree most where an object's saturation is close to the threshold: faint objects and thin
parts. Every other step is the real command: the plan, the masks, the uncertainty maps, the thumbnails, the
scores and the page. Needs Selenium and Chromium with its driver (Debian: ``apt-get install -y chromium
chromium-driver``).
"""

from __future__ import annotations

import argparse
import base64
import io
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pdfnet.cli import main
from pdfnet.commands import predict as predict_command
from pdfnet.data.processing import denormalize_image
from pdfnet.inference.predictor import Predictor


class SaturationNetwork(torch.nn.Module):
    """Logits from colour saturation, with a flip-dependent ramp and a scale-dependent ripple (module docstring)."""

    min_size = 256
    variant = "stand-in"

    def __init__(self) -> None:
        super().__init__()
        self.depth_decoder = None

    def forward(self, image: torch.Tensor, depth: torch.Tensor) -> SimpleNamespace:
        rgb = torch.stack([denormalize_image(x) for x in image.float()])
        saturation = rgb.amax(dim=1, keepdim=True) - rgb.amin(dim=1, keepdim=True)
        saturation = F.avg_pool2d(saturation, 5, stride=1, padding=2)
        H, W = image.shape[-2:]
        x = torch.linspace(-1, 1, W).view(1, 1, 1, W)
        ripple = torch.sin(torch.arange(W, dtype=torch.float32) * (2 * torch.pi / 23)).view(1, 1, 1, W)
        return SimpleNamespace(logits=[40.0 * (saturation - 0.2) + 1.5 * x + 1.2 * ripple])


def _background(rng: np.random.Generator, H: int, W: int, tone: float) -> np.ndarray:
    """A grey studio backdrop: a vertical gradient, a soft vignette and a little grain."""
    yy, xx = np.mgrid[:H, :W] / np.array([H, W])[:, None, None]
    light = tone + 40 * (1 - yy) - 35 * ((xx - 0.5) ** 2 + (yy - 0.45) ** 2)
    grey = light[..., None] + rng.normal(0, 3, (H, W, 1))
    return np.clip(np.repeat(grey, 3, axis=2), 0, 255)


def _shade(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], light: float = 0.35) -> None:
    """Paint ``mask`` in ``colour``, lit from the upper left (so that objects look round)."""
    H, W = mask.shape
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return
    cy, cx, r = ys.mean(), xs.mean(), max(np.ptp(ys), np.ptp(xs), 1) / 2
    shade = 1 + light * (-(ys - cy) - (xs - cx)) / (2 * r)
    image[ys, xs] = np.clip(np.asarray(colour)[None] * shade[:, None], 0, 255)


def synthetic_photos(folder: Path) -> None:
    """Eight 480x360 photos (one portrait) of coloured objects on grey, from easy to hard, and one of nothing."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)

    def canvas(H=360, W=480, tone=150):
        return _background(rng, H, W, tone), np.zeros((H, W), np.uint8)

    scenes = {}
    image, m = canvas()
    cv2.ellipse(m, (240, 190), (95, 140), 0, 0, 360, 1, -1)
    cv2.rectangle(m, (215, 30), (265, 70), 1, -1)
    _shade(image, m, (40, 95, 200))
    scenes["vase"] = image
    image, m = canvas()
    cv2.circle(m, (240, 180), 130, 1, 9)
    cv2.circle(m, (240, 180), 18, 1, -1)
    for a in np.linspace(0, np.pi, 12, endpoint=False):
        d = (np.cos(a) * 128, np.sin(a) * 128)
        cv2.line(m, (int(240 - d[0]), int(180 - d[1])), (int(240 + d[0]), int(180 + d[1])), 1, 2)
    _shade(image, m, (210, 60, 40), light=0.1)
    scenes["wheel"] = image
    image, m = canvas(tone=160)
    leaf = np.array([[240, 40], [330, 120], [350, 220], [250, 330], [150, 230], [160, 120]], np.int32)
    cv2.fillPoly(m, [leaf], 1)
    cv2.line(m, (250, 330), (250, 355), 1, 5)
    _shade(image, m, (70, 170, 60))
    scenes["leaf"] = image
    image, m = canvas(tone=140)
    cv2.circle(m, (240, 185), 120, 1, -1)
    _shade(image, m, (160, 124, 100), light=0.15)  # a faint ball: its colour close to the grey
    scenes["faint_ball"] = image
    image, m = canvas(H=480, W=360, tone=155)
    cv2.rectangle(m, (90, 110), (270, 250), 1, -1)
    cv2.rectangle(m, (90, 20), (115, 250), 1, -1)
    for x in (95, 255):
        cv2.line(m, (x, 250), (x, 455), 1, 8)
    _shade(image, m, (180, 120, 50), light=0.2)
    scenes["chair"] = image
    image, m = canvas(tone=145)
    cv2.line(m, (240, 350), (240, 220), 1, 6)

    def branch(x, y, angle, length, depth):
        if depth == 0:
            return
        x2, y2 = int(x + length * np.cos(angle)), int(y - length * np.sin(angle))
        cv2.line(m, (x, y), (x2, y2), 1, max(1, depth - 1))
        for turn in (-0.5, 0.45):
            branch(x2, y2, angle + turn, length * 0.7, depth - 1)

    branch(240, 220, np.pi / 2, 55, 6)
    _shade(image, m, (60, 150, 90), light=0.1)
    scenes["fern"] = image
    image, m = canvas(tone=150)
    cv2.ellipse(m, (240, 200), (150, 60), -12, 0, 360, 1, -1)
    cv2.ellipse(m, (240, 200), (90, 30), -12, 0, 360, 0, -1)
    _shade(image, m, (200, 170, 40))
    scenes["ring"] = image
    scenes["empty_backdrop"] = canvas(tone=150)[0]
    for name, picture in scenes.items():
        Image.fromarray(picture.astype(np.uint8)).save(folder / f"{name}.jpg", quality=92)
        H, W = picture.shape[:2]
        Image.fromarray(np.full((H, W), 128, np.uint8)).save(folder.parent / "depth" / f"{name}.png")


def label(photos: Path, out: Path) -> None:
    """``pdfnet label`` with the stand-in network (and flat depth maps given with ``--depth``)."""
    stand_in = Predictor(SaturationNetwork(), None, device="cpu", input_size=1024, tta=True)
    predict_command._load_predictor = lambda args, device: stand_in
    predict_command.check_sources = lambda args: None
    status = main(["label", str(photos), "--out", str(out), "--depth", str(photos.parent / "depth"), "--device", "cpu"])
    if status:
        raise SystemExit(f"label failed ({status})")


def screenshot(page: Path, width: int, height: int, chromium: str, chromedriver: str) -> Image.Image:
    """The top ``height`` CSS pixels of ``page``, ``width`` wide."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.get(page.resolve().as_uri())
        loaded = "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        for _ in range(100):
            if driver.execute_script(loaded):
                break
            time.sleep(0.1)
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        time.sleep(0.5)
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.quit()
    return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the PNG to write")
    p.add_argument("--keep", help="label into this folder and keep it (default: a temporary folder)")
    p.add_argument("--width", type=int, default=1280, help="page width in CSS pixels (default 1280)")
    p.add_argument("--height", type=int, default=1250, help="how much of the page, in CSS pixels (default 1250)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "depth").mkdir()
        synthetic_photos(work / "photos")
        dataset = Path(args.keep) if args.keep else work / "labelled"
        label(work / "photos", dataset)
        shot = screenshot(dataset / "review.html", args.width, args.height, args.chromium, args.chromedriver)
    shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({shot.width}x{shot.height})")


if __name__ == "__main__":
    main_()
