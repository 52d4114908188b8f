"""The Gradio page of ``pdfnet serve``, and Gradio's API to it.

The page: drop, paste or pick an image (or click the bundled photo); the cutout on a checkerboard, the mask and the
pseudo-depth side by side with a progress bar (and the place in the queue while it waits); options for TTA,
foreground-colour refinement, the depth model and the weights; download buttons for the full-size cutout and mask.
A failure shows in the page; the server keeps serving.

Gradio's API: ``/predict`` (an image in; cutout, mask and pseudo-depth PNGs out, at the image's size) and
``/predict_with_options`` (the page's options too). The plain HTTP API is :mod:`pdfnet.app.api`. Every cutout,
page or API, is a job of the device's :class:`~pdfnet.app.worker.DeviceWorker`; a page or Gradio client that
cancels, or leaves, drops its job.

Import this only after setting ``GRADIO_ANALYTICS_ENABLED=False`` (the ``serve`` command does): Gradio reads it at
import time.
"""

from __future__ import annotations

import asyncio
import contextvars
import html
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..errors import ImageReadError, PDFNetError
from ..io import example_image
from .models import Cutout, Cutter, ModelCache, Options, Progress, no_progress, parse_flag, printable, scrub
from .worker import DeviceWorker, DroppedError, QueueFullError

log = logging.getLogger("pdfnet.serve")

TITLE = "PDFNet · cut out the main object"
HEADER = (
    "# PDFNet\nCut the main object out of a photo: drop, paste (Ctrl+V) or pick an image. "
    "It runs on this machine; nothing is sent elsewhere."
)
OUTPUT_HEIGHT = 280  # px, each of the three result pictures

CSS = """
.pdfnet-header h1 { margin-bottom: 0.1em; }
.pdfnet-header p { margin-top: 0; color: var(--body-text-color-subdued); }
/* transparent pixels of the cutout show as a checkerboard */
#pdfnet-cutout img { background: repeating-conic-gradient(#d4d4d8 0% 25%, #ffffff 0% 50%) 50% / 16px 16px; }
/* Gradio sizes each <img> to its whole box (object-fit: scale-down): shrink it to the picture, so that the
   checkerboard shows only behind the cutout, not in the letterbox around it */
#pdfnet-cutout img, #pdfnet-mask img, #pdfnet-depth img {
  width: auto; height: auto; max-width: 100%; max-height: 100%; object-fit: contain;
}
#pdfnet-status { min-height: 1.5em; }
.pdfnet-caption p { font-size: var(--text-sm); color: var(--body-text-color-subdued); text-align: center; }
#pdfnet-status.pdfnet-error .md, #pdfnet-status.pdfnet-error .md * { color: var(--error-text-color); }
footer { opacity: 0.6; }
"""

# Page-wide Ctrl+V and drop: Gradio's Image takes drops only on its empty drop zone and pastes only through its
# clipboard button (navigator.clipboard, which asks for permission). This feeds a pasted or dropped file into the
# Image's own <input type=file>, so that it goes through Gradio's usual upload and its file-type check.
JS = """
() => {
  const feed = (file) => {
    const input = document.querySelector('#pdfnet-input input[type=file]');
    if (!input || !file) return false;
    const files = new DataTransfer();
    files.items.add(file);
    input.files = files.files;
    input.dispatchEvent(new Event('change', { bubbles: true }));
    return true;
  };
  document.addEventListener('paste', (e) => {
    if (e.target.closest && e.target.closest('input, textarea, [contenteditable=true]')) return;
    const item = [...(e.clipboardData?.items || [])].find((i) => i.kind === 'file');
    if (item && feed(item.getAsFile())) e.preventDefault();
  });
  const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes('Files');
  document.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
  document.addEventListener('drop', (e) => {
    if (e.defaultPrevented || !hasFiles(e)) return;  // Gradio's own drop zone took it
    e.preventDefault();
    feed(e.dataTransfer.files[0]);
  });
}
"""


class UploadError(gr.Error):
    """A message about the user's file (the page then clears the upload), rather than a failure of ours."""


def _error(message: str, upload: bool = False) -> gr.Error:
    """A message for the page: one sentence (our errors' messages carry no final full stop, other libraries'
    may), HTML-escaped (gr.Error renders HTML), kept until it is closed (duration=None)."""
    kind = UploadError if upload else gr.Error
    sentence = message if message.endswith((".", "?", "!")) else message + "."
    return kind(html.escape(sentence, quote=False), duration=None, print_exception=False)


def _upload(payload: object) -> tuple[str | Path, str]:
    """(file, the name it was sent with) from what the Image component sends unprocessed: a FileData dict whose
    path Gradio has already checked is one of its uploads; or a plain path, from Python callers."""
    if payload is None:
        raise _error("Drop, paste or pick an image first")
    if isinstance(payload, str | Path):
        return payload, Path(payload).name
    if not isinstance(payload, dict):
        raise _error(f"Expected an image, got {type(payload).__name__}", upload=True)
    if not payload.get("path"):
        raise _error("The upload carried no file", upload=True)
    return payload["path"], Path(payload.get("orig_name") or payload["path"]).name


def _options(tta: object, refine: object, depth: object, weights: object) -> Options:
    """The page's (or a Gradio client's) options, checked: flags are booleans or true/false/1/0, not any truthy
    string; the choices are strings (None: the server's default)."""
    for name, value in (("depth_model", depth), ("weights", weights)):
        if value is not None and not isinstance(value, str):
            raise _error(f"{name} must be a string, got {type(value).__name__}")
    try:
        return Options(parse_flag("tta", tta), parse_flag("refine_foreground", refine), depth or None, weights or None)
    except PDFNetError as e:
        raise _error(str(e)) from None


def _threadsafe(progress: Progress) -> Progress:
    """``progress`` callable from the worker's thread: the call runs on this event loop, in this task's context
    (where Gradio finds which event it belongs to)."""
    loop, context = asyncio.get_running_loop(), contextvars.copy_context()

    def report(*args, **kwargs) -> None:
        loop.call_soon_threadsafe(lambda: context.run(progress, *args, **kwargs))

    return report


def _client_alive() -> Callable[[], bool]:
    """Whether the client of the Gradio event this runs in still waits for it. A client that cancels gets the
    event's task cancelled; one that closes its connection (a closed tab, a killed script) does not: Gradio only
    marks the event dead (``Event.alive``), and the task would wait on for a job nobody reads. Outside an event,
    or where Gradio keeps no such mark, always true."""
    from gradio.context import LocalContext

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    events = getattr(getattr(blocks, "_queue", None), "event_ids_to_events", None)
    if event_id is None or not isinstance(events, dict):
        return lambda: True

    def alive() -> bool:
        event = events.get(event_id)
        return event is None or getattr(event, "alive", True)

    return alive


async def cut_out(
    worker: DeviceWorker, cutter: Cutter, payload: object, options: Options, progress: Progress = no_progress
) -> Cutout:
    """One cutout as a job of ``worker``, showing its place in the queue while it waits; every failure becomes a
    gr.Error the page shows, and the server keeps serving. Cancelling the calling task drops the job."""
    path, name = _upload(payload)
    report = _threadsafe(progress)
    alive = _client_alive()
    try:
        job = worker.submit(lambda job: cutter(path, name, options, job.check, report), printable(name), alive)
    except QueueFullError as e:
        raise _error(f"The server is busy ({e.waiting} cutouts are waiting); try again in {e.retry_after} s") from None
    except DroppedError:
        raise _error("The server is stopping") from None
    waiting = asyncio.ensure_future(job.wait())
    try:
        while not waiting.done():
            if not alive():
                log.info("dropped %s: its client went away", printable(name))
                raise asyncio.CancelledError
            ahead = job.position() - 1
            if ahead > 0:
                progress(0.0, desc=f"Waiting: {ahead} cutout{'s' * (ahead > 1)} ahead")
            await asyncio.wait({waiting}, timeout=0.5)
    finally:
        if not waiting.done():  # cancelled by Gradio (its client cancelled), or its client left
            job.cancel()
            waiting.cancel()
    try:
        return waiting.result()
    except DroppedError:
        raise _error("The cutout was stopped: the server is stopping") from None
    except ImageReadError as e:
        log.info("refused %s: %s", printable(name), printable(e, 400))
        raise _error(f"Cannot use this upload: {scrub(str(e))}", upload=True) from None
    except PDFNetError as e:
        log.info("refused %s: %s", printable(name), printable(e, 400))
        raise _error(f"Cannot cut out {name}: {scrub(str(e))}") from None
    except Exception as e:  # logged with its traceback by the worker
        if type(e).__name__ == "OutOfMemoryError":  # torch.cuda's
            raise _error(
                f"Out of GPU memory on {name}: try without TTA, or restart the server with a smaller --input-size"
            ) from None
        raise _error(f"Cutting out {name} failed: {type(e).__name__}: {scrub(str(e))}") from None


def summary(result: Cutout, weights: str, depth: str, tta: bool) -> str:
    """The status line under the options, in Markdown."""
    parts = [f"**{result.width}×{result.height}** px", f"{result.seconds:.2f} s", f"weights *{weights}*"]
    parts += [f"depth *{depth}*"] + ["TTA"] * bool(tta) + ["refined colours"] * result.refined
    return " · ".join(parts)


@dataclass
class OptionInputs:
    """The page's option components."""

    weights: gr.Dropdown
    depth: gr.Radio
    tta: gr.Checkbox
    refine: gr.Checkbox


@dataclass
class Results:
    """The page's result components, in the order the page's handler returns them."""

    cutout: gr.Image
    mask: gr.Image
    depth: gr.Image
    download_cutout: gr.DownloadButton
    download_mask: gr.DownloadButton
    status: gr.Markdown

    def components(self) -> list:
        return [self.cutout, self.mask, self.depth, self.download_cutout, self.download_mask, self.status]

    @staticmethod
    def cleared() -> tuple:
        """The values of :meth:`components` with no result: empty pictures, disabled buttons, no status."""
        downloads = (gr.DownloadButton(value=None, interactive=False) for _ in range(2))
        return None, None, None, *downloads, gr.Markdown("")


def _option_inputs(models: ModelCache) -> OptionInputs:
    with gr.Group():
        weights = gr.Dropdown(models.weight_choices, value=models.default_weights, label="Weights")
        depth = gr.Radio(
            models.depth_choices,
            value=models.default_depth,
            label="Depth model (Depth-Anything-V2), loaded on first use",
            info="small: Apache-2.0 · base, large: CC-BY-NC-4.0 (non-commercial) weights",
        )
        tta = gr.Checkbox(label="Test-time augmentation (flips × scales: 6 passes, ~6× slower)", value=False)
        refine = gr.Checkbox(label="Refine foreground colours at soft edges", value=True)  # as pdfnet predict
    return OptionInputs(weights, depth, tta, refine)


def _result(label: str, elem_id: str) -> gr.Image:
    return gr.Image(
        label=label,
        type="filepath",
        format="png",
        height=OUTPUT_HEIGHT,
        interactive=False,
        elem_id=elem_id,
        buttons=["fullscreen"],
    )


def _results(status: gr.Markdown) -> Results:
    with gr.Row(equal_height=False):
        with gr.Column(min_width=220):
            cutout = _result("Cutout", "pdfnet-cutout")
            download_cutout = gr.DownloadButton(
                "Download cutout (PNG with alpha)", interactive=False, elem_id="pdfnet-dl-cutout"
            )
        with gr.Column(min_width=220):
            mask = _result("Mask", "pdfnet-mask")
            download_mask = gr.DownloadButton("Download mask (PNG)", interactive=False, elem_id="pdfnet-dl-mask")
        with gr.Column(min_width=220):
            depth = _result("Pseudo-depth", "pdfnet-depth")
            gr.Markdown(
                "Depth-Anything-V2's relative depth (near is bright): PDFNet's second input.",
                elem_classes="pdfnet-caption",
            )
    return Results(cutout, mask, depth, download_cutout, download_mask, status)


def _add_api(worker: DeviceWorker, cutter: Cutter, models: ModelCache) -> None:
    """``/predict`` and ``/predict_with_options``, on hidden components of their own (so that the page's download
    buttons and status line are not part of the API)."""

    async def predict(image, progress=gr.Progress()):  # noqa: B008 (Gradio's way to ask for progress)
        """Cut the main object out of an image, with the server's default weights and depth model.

        Returns the cutout (RGBA PNG: the image with the mask as alpha), the mask (8-bit grey PNG) and the
        pseudo-depth (8-bit grey PNG), all at the image's size.
        """
        result = await cut_out(worker, cutter, image, Options(), progress)
        return str(result.cutout), str(result.mask), str(result.depth)

    async def predict_with_options(image, tta, refine_foreground, depth_model, weights, progress=gr.Progress()):  # noqa: B008
        """/predict with the page's options: test-time augmentation, foreground-colour refinement (booleans:
        true/false), the depth model and the weights. Returns the same three PNGs."""
        options = _options(tta, refine_foreground, depth_model, weights)
        result = await cut_out(worker, cutter, image, options, progress)
        return str(result.cutout), str(result.mask), str(result.depth)

    with gr.Column(visible=False):
        image = gr.Image(label="image", type="filepath")
        tta = gr.Checkbox(label="tta", value=False)
        refine = gr.Checkbox(label="refine_foreground", value=True)
        depth = gr.Dropdown([v for _, v in models.depth_choices], value=models.default_depth, label="depth_model")
        weights = gr.Dropdown([v for _, v in models.weight_choices], value=models.default_weights, label="weights")
        outputs = [gr.Image(label=name, type="filepath", format="png") for name in ("cutout", "mask", "depth")]
        trigger = gr.Button(visible=False)
    # preprocess=False: our reader, not Gradio's, decodes the upload (on the worker), so that a non-image gets a
    # clear message and nothing is decoded before its turn; concurrency: the worker's queue is the one that counts
    queue = dict(preprocess=False, concurrency_limit=None)
    trigger.click(predict, [image], outputs, api_name="predict", **queue)
    inputs = [image, tta, refine, depth, weights]
    trigger.click(predict_with_options, inputs, outputs, api_name="predict_with_options", **queue)


def build_app(models: ModelCache, cutter: Cutter, worker: DeviceWorker) -> gr.Blocks:
    """The page and Gradio's API around ``cutter`` (whose networks are ``models``), every cutout a job of
    ``worker``. Serve it with :func:`pdfnet.app.server.serve`, which adds the theme, CSS and script."""
    last_error: dict[str, tuple[str, bool]] = {}  # session -> (message, about the upload?), for the failure handler

    async def run_page(image, tta, refine, depth, weights, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        try:
            result = await cut_out(worker, cutter, image, _options(tta, refine, depth, weights), progress)
        except gr.Error as e:
            if request.session_hash:
                if len(last_error) > 1000:  # sessions that never came back for their message
                    last_error.clear()
                last_error[request.session_hash] = (e.message, isinstance(e, UploadError))
            raise
        line = summary(result, *models.short_names(weights, depth), tta)
        download = [gr.DownloadButton(value=str(p), interactive=True) for p in (result.cutout, result.mask)]
        return str(result.cutout), str(result.mask), str(result.depth), *download, gr.Markdown(line, elem_classes=[])

    def on_failure(request: gr.Request):
        """After a failed run: say why under the options (the pop-up fades) and drop an unusable upload."""
        message, bad_upload = last_error.pop(request.session_hash, ("The cutout failed.", False))
        status = gr.Markdown(f"**Error:** {message}", elem_classes=["pdfnet-error"])
        return None if bad_upload else gr.skip(), *Results.cleared()[:-1], status

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(1800, 3600)) as app:
        gr.Markdown(HEADER, elem_classes="pdfnet-header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                image = gr.Image(
                    label="Image",
                    sources=["upload", "clipboard"],
                    type="filepath",
                    height=OUTPUT_HEIGHT,
                    elem_id="pdfnet-input",
                    placeholder="Drop an image here, paste one, or click to pick a file",
                )
                examples = gr.Examples(
                    [[str(example_image())]], inputs=[image], label="Or try", elem_id="pdfnet-examples"
                )
            with gr.Column(scale=2, min_width=280):
                options = _option_inputs(models)
                run = gr.Button("Cut out", variant="primary", elem_id="pdfnet-run")
                status = gr.Markdown(elem_id="pdfnet-status")
        results = _results(status)
        inputs = [image, options.tta, options.refine, options.depth, options.weights]
        page_event = dict(
            fn=run_page,
            inputs=inputs,
            outputs=results.components(),
            api_visibility="private",
            preprocess=False,
            show_progress="full",
            show_progress_on=[results.cutout, results.mask, results.depth],
            trigger_mode="always_last",  # an image dropped while another runs goes next ("once" would drop it)
            concurrency_limit=None,  # the worker's queue is the one that counts
        )
        failure = dict(fn=on_failure, outputs=[image, *results.components()], queue=False, api_visibility="private")
        gr.on(triggers=[run.click, image.upload], **page_event).failure(**failure)
        examples.load_input_event.then(**page_event).failure(**failure)
        image.clear(Results.cleared, None, results.components(), queue=False, api_visibility="private")
        _add_api(worker, cutter, models)
    app.queue(default_concurrency_limit=None, max_size=worker.max_waiting)
    return app
