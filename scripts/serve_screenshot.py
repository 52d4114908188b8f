"""A screenshot of ``pdfnet serve``'s page after a cutout, for the README (``docs/serve.png``).

    pdfnet serve --depth-model small &
    python scripts/serve_screenshot.py http://127.0.0.1:7860 docs/serve.png            # the bundled photo
    python scripts/serve_screenshot.py http://127.0.0.1:7860 shot.png --image photo.jpg --width 1100

Needs Selenium and Chromium with its driver (Debian: ``apt-get install -y chromium chromium-driver``). The page is
captured at its full height and the PNG reduced to 256 colours, which keeps it small.
"""

from __future__ import annotations

import argparse
import base64
import io
import time

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pdfnet.io import example_image


def screenshot(url: str, image: str, width: int, chromium: str, chromedriver: str) -> Image.Image:
    """The page at ``url`` after ``image`` was uploaded and cut out, ``width`` CSS pixels wide."""
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: "PDFNet" in d.find_element(By.TAG_NAME, "body").text)
        driver.find_element(By.CSS_SELECTOR, "#pdfnet-input input[type=file]").send_keys(image)
        WebDriverWait(driver, 600).until(lambda d: " px " in d.find_element(By.ID, "pdfnet-status").text)
        time.sleep(1)  # let the three pictures paint
        height = driver.execute_script("return document.documentElement.scrollHeight")
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        time.sleep(0.5)
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    finally:
        driver.quit()
    return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="a running pdfnet serve, e.g. http://127.0.0.1:7860")
    p.add_argument("out", help="the PNG to write")
    p.add_argument("--image", default=str(example_image()), help="the photo to cut out (default: the bundled one)")
    p.add_argument("--width", type=int, default=1280, help="page width in CSS pixels (default 1280)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = p.parse_args()
    shot = screenshot(args.url, args.image, args.width, args.chromium, args.chromedriver)
    shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({shot.width}x{shot.height})")


if __name__ == "__main__":
    main()
