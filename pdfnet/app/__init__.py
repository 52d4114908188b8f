"""``pdfnet serve``: a local web page and HTTP API for cutouts, built with Gradio and FastAPI (the ``app`` extra).

Nothing else in the package imports this subpackage, so ``import pdfnet`` and the other commands work without
Gradio installed.

- ``models``: the networks, each loaded once, and one cutout from an uploaded file to full-size PNGs. It does
  not import Gradio, so the ``serve`` command loads (and checks) the weights before paying for Gradio's import.
- ``worker``: the one thread per device that runs every cutout, page and API alike, in one queue.
- ``api``: the plain HTTP API (``POST /api/v1/cutout``, rembg's ``POST /api/remove``, ``GET /api/v1/health``).
- ``page``: the Gradio page and Gradio's API to it (``/predict``, ``/predict_with_options``).
- ``server``: the page mounted on the API's app, served by uvicorn until SIGTERM or Ctrl+C.
"""
