"""The review page of a labelled dataset (``pdfnet label``): ``review.html``, one row per image, least certain
first, with three thumbnails (the photo, the mask over it, the uncertainty), so that a person can check the
doubtful masks first.

The page needs nothing from the internet: its style and its few lines of script are inline, and its thumbnails
are small JPEGs in ``review_files/`` beside it (one page of base64 pictures would weigh tens of megabytes for a
thousand images), loaded as the page scrolls. Each thumbnail links to the full-size file of the dataset. Ticking
"needs fixing" on a row keeps the mark in the browser (local storage) and lists the marked names at the top, to
copy.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
from PIL import Image

from .inference.uncertainty import BAND_FRACTION, UncertaintyScores, ranked
from .io import atomic_path, write_text_atomic

THUMBNAIL_SIDE = 256  # the longer side of a thumbnail, in pixels
THUMBNAIL_FOLDER = "review_files"
EAGER_ROWS = 60  # rows whose thumbnails load at once; later ones as they scroll near
OUTLINE = (255, 48, 140)  # the mask's edge on the overlay: a pink that few photos contain
BACKGROUND_TINT = (18, 24, 48)  # what the background is darkened towards on the overlay


def thumbnail_names(stem: str) -> dict[str, str]:
    """The three thumbnails of an image, by kind: ``photo``, ``mask`` (the overlay), ``uncertainty``."""
    return {"photo": f"{stem}.jpg", "mask": f"{stem}_mask.jpg", "uncertainty": f"{stem}_uncertainty.jpg"}


def _thumbnail_shape(shape: tuple[int, ...], side: int = THUMBNAIL_SIDE) -> tuple[int, int]:
    H, W = shape[:2]
    scale = min(1.0, side / max(H, W))  # never enlarged
    return max(1, round(H * scale)), max(1, round(W * scale))


def _resize(array: np.ndarray, shape: tuple[int, int], resample: int) -> np.ndarray:
    h, w = shape
    if array.shape[:2] == (h, w):
        return array
    return np.asarray(Image.fromarray(array).resize((w, h), resample))


def overlay(photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 photo and (h, w) uint8 mask -> the photo with its background darkened and the mask's edge
    (mask >= 128) drawn in :data:`OUTLINE`."""
    alpha = mask.astype(np.float32)[..., None] / 255.0
    dimmed = 0.3 * photo.astype(np.float32) + 0.7 * np.asarray(BACKGROUND_TINT, np.float32)
    out = np.rint(alpha * photo + (1.0 - alpha) * dimmed).astype(np.uint8)
    inside = (mask >= 128).astype(np.uint8)
    edge = inside != cv2.erode(inside, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    out[edge] = OUTLINE
    return out


def _inferno() -> np.ndarray:
    """(256, 3) uint8: matplotlib's perceptually uniform ``inferno`` (black, purple, orange, pale yellow)."""
    from matplotlib import colormaps

    return np.rint(colormaps["inferno"](np.arange(256))[:, :3] * 255).astype(np.uint8)


def _display_levels() -> np.ndarray:
    """(256,) uint8: the colour index of each uncertainty level, on a square-root scale (a standard deviation of
    0.03, level 15, is a quarter up the colour scale; 0.125, level 64, half way), so that the modest disagreement
    along most edges shows."""
    return np.rint(np.sqrt(np.arange(256) / 255.0) * 255).astype(np.uint8)


def colour_uncertainty(levels: np.ndarray) -> np.ndarray:
    """(h, w) uint8 uncertainty (0..255 for a standard deviation of 0..0.5) -> (h, w, 3) uint8 in ``inferno``
    (square-root scale: :func:`_display_levels`), on one fixed scale for every image, so that thumbnails
    compare."""
    return _inferno()[_display_levels()[levels]]


def make_thumbnails(image: np.ndarray, mask: np.ndarray, uncertainty: np.ndarray) -> dict[str, np.ndarray]:
    """The three (h, w, 3) uint8 thumbnails of an (H, W, 3) photo, its (H', W') mask and uncertainty map (the
    mask's size may differ from the photo's). The uncertainty is shrunk keeping each block's highest value
    (a dilation first), so that a thin band of doubt at the edge stays visible."""
    shape = _thumbnail_shape(image.shape)
    photo = _resize(image, shape, Image.BICUBIC)
    small_mask = _resize(mask, shape, Image.BILINEAR)
    factor = max(uncertainty.shape[:2]) / max(shape)
    if factor > 1.5:
        k = int(factor)
        uncertainty = cv2.dilate(uncertainty, np.ones((k, k), np.uint8))
    small = cv2.resize(uncertainty, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return {"photo": photo, "mask": overlay(photo, small_mask), "uncertainty": colour_uncertainty(small)}


def write_thumbnails(
    folder: str | os.PathLike, stem: str, image: np.ndarray, mask: np.ndarray, uncertainty: np.ndarray
) -> None:
    """The thumbnails of one image (:func:`make_thumbnails`) as JPEGs in ``folder``, each written atomically."""
    names = thumbnail_names(stem)
    for kind, picture in make_thumbnails(image, mask, uncertainty).items():
        with atomic_path(Path(folder) / names[kind]) as tmp:
            Image.fromarray(picture).save(tmp, format="JPEG", quality=85)


@dataclass
class ReviewRow:
    """One image of the page: its name, its files (paths relative to the page) and scores."""

    name: str
    image: str
    mask: str
    uncertainty: str
    scores: UncertaintyScores


def _url(path: str) -> str:
    return html.escape(quote(path), quote=True)


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _row(rank: int, row: ReviewRow, top: float, eager: bool) -> str:
    s = row.scores
    thumbs = thumbnail_names(row.name)
    if s.boundary is None:
        what = "no object found" if s.area == 0 else "the object fills the image"
        boundary = f'<span class="flag">no edge: {what}</span>'
        bar = 100.0
    else:
        boundary = _percent(s.boundary)
        bar = 100.0 * s.boundary / top if top > 0 else 0.0
    name = html.escape(row.name)
    loading = "" if eager else ' loading="lazy"'
    figures = []
    for kind, target, caption in (
        ("photo", row.image, "photo"),
        ("mask", row.mask, "mask"),
        ("uncertainty", row.uncertainty, "uncertainty"),
    ):
        src = _url(f"{THUMBNAIL_FOLDER}/{thumbs[kind]}")
        figures.append(
            f'<figure><a href="{_url(target)}"><img src="{src}" alt="{caption} of {name}"{loading}></a>'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return f"""<article id="{html.escape(quote(row.name), quote=True)}" data-name="{name}">
<div class="info"><div class="rank">{rank}</div><h2 title="{name}">{name}</h2>
<dl><dt>boundary</dt><dd>{boundary}</dd><dt>whole image</dt><dd>{_percent(s.overall)}</dd>
<dt>object</dt><dd>{_percent(s.foreground)}</dd><dt>size</dt><dd>{s.width}&#215;{s.height}</dd></dl>
<div class="bar"><span style="width:{bar:.1f}%"></span></div>
<label><input type="checkbox" class="mark"> needs fixing</label></div>
{"".join(figures)}
</article>"""


def _legend() -> str:
    colours = _inferno()[np.linspace(0, 255, 9).round().astype(int)]
    stops = ", ".join(f"rgb({r},{g},{b})" for r, g, b in colours)
    gradient = f'<i style="background:linear-gradient(90deg, {stops})"></i>'
    ends = "<span>uncertainty: passes agree (std 0)</span>", "<span>passes split (std 0.5)</span>"
    note = "<span>square-root scale: std 0.125 is half way</span>"
    return f'<div class="legend">{ends[0]}{gradient}{ends[1]}{note}</div>'


STYLE = """
:root { --ink: #1d2230; --muted: #5b6375; --line: #d9dde6; --card: #ffffff; --page: #f3f4f7; --accent: #ff308c; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--page); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { padding: 20px 28px 12px; background: var(--card); border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 4px 0; color: var(--muted); max-width: 1100px; }
.summary { display: flex; gap: 24px; flex-wrap: wrap; margin: 10px 0 4px; }
.summary b { font-size: 18px; display: block; color: var(--ink); }
.summary div { color: var(--muted); }
.legend { display: flex; align-items: center; gap: 8px; color: var(--muted); font-size: 12px; margin-top: 8px; }
.legend i { display: inline-block; width: 220px; height: 12px; border-radius: 3px; }
details { margin-top: 8px; color: var(--muted); }
textarea { width: 100%; max-width: 700px; height: 80px; font: 12px ui-monospace, monospace; }
main { padding: 16px 28px 40px; display: flex; flex-direction: column; gap: 12px; }
article { display: grid; grid-template-columns: 200px repeat(3, max-content); gap: 12px; align-items: start;
  background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
article.marked { border-color: var(--accent); box-shadow: 0 0 0 2px var(--accent) inset; }
.info { min-width: 0; }
.rank { font-size: 22px; font-weight: 700; color: var(--muted); }
h2 { font-size: 14px; margin: 2px 0 6px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 1px 8px; margin: 0 0 8px; font-size: 13px; }
dt { color: var(--muted); } dd { margin: 0; font-variant-numeric: tabular-nums; }
.flag { color: #b3261e; font-weight: 600; }
.bar { height: 6px; background: #eceef3; border-radius: 3px; overflow: hidden; margin-bottom: 8px; }
.bar span { display: block; height: 100%; background: linear-gradient(90deg, #fca50a, #dd513a, #932667); }
label { font-size: 13px; color: var(--muted); cursor: pointer; }
figure { margin: 0; }
figure img { display: block; height: 180px; width: auto; max-width: 320px; object-fit: contain;
  border-radius: 4px; background: #e6e8ee; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 3px; }
"""

SCRIPT = """
const page = location.pathname, key = 'pdfnet-review:' + page;
const marked = new Set(JSON.parse(localStorage.getItem(key) || '[]'));
const list = document.getElementById('marked'), count = document.getElementById('count');
function show() {
  const names = [...marked].sort();
  list.value = names.join('\\n'); count.textContent = names.length;
  localStorage.setItem(key, JSON.stringify(names));
}
for (const row of document.querySelectorAll('article')) {
  const box = row.querySelector('.mark'), name = row.dataset.name;
  box.checked = marked.has(name); row.classList.toggle('marked', box.checked);
  box.addEventListener('change', () => {
    box.checked ? marked.add(name) : marked.delete(name);
    row.classList.toggle('marked', box.checked); show();
  });
}
show();
"""


def review_html(rows: Sequence[ReviewRow], title: str) -> str:
    """The page of ``rows`` (sorted here, least certain first: :func:`pdfnet.inference.uncertainty.ranked`)."""
    order = [r for _, _, r in ranked((r.name, r.scores, r) for r in rows)]
    top = max((r.scores.boundary for r in order if r.scores.boundary is not None), default=0.0)
    edgeless = sum(r.scores.boundary is None for r in order)
    bounds = sorted(r.scores.boundary for r in order if r.scores.boundary is not None)
    median = _percent(bounds[len(bounds) // 2]) if bounds else "-"
    articles = "\n".join(_row(i, r, top, i <= EAGER_ROWS) for i, r in enumerate(order, start=1))
    k = f"{100 * BAND_FRACTION:g}%"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style></head>
<body><header>
<h1>{html.escape(title)}</h1>
<p>Least certain first. <b>Boundary</b>: how much the six test-time passes (flip &#215; 3 scales) disagree along the
mask's edge (within {k} of the longer side), as a share of the most they can (a standard deviation of 0.5);
<b>whole image</b>: the same over every pixel. Check the top rows first; click a thumbnail for the full-size file.</p>
<div class="summary"><div><b>{len(order)}</b>images</div><div><b>{median}</b>median boundary uncertainty</div>
<div><b>{edgeless}</b>without an edge (no object, or all object)</div></div>
{_legend()}
<details><summary>Marked as needing a fix: <span id="count">0</span> (kept in this browser)</summary>
<textarea id="marked" readonly aria-label="names marked as needing a fix"></textarea></details>
</header>
<main>
{articles}
</main>
<script>{SCRIPT}</script>
</body></html>
"""


def write_review(path: str | os.PathLike, rows: Sequence[ReviewRow], title: str) -> None:
    """Write the page (:func:`review_html`) atomically; its thumbnails must be in ``review_files/`` beside it."""
    write_text_atomic(path, review_html(rows, title))
