"""``pdfnet serve``: a local web page and HTTP API for cutouts, built with Gradio (the ``app`` extra).

Nothing else in the package imports this subpackage, so ``import pdfnet`` and the other commands work without
Gradio installed.

- ``models``: the networks, each loaded once, and one cutout from an uploaded file to full-size PNGs. It does
  not import Gradio, so the ``serve`` command loads (and checks) the weights before paying for Gradio's import.
- ``page``: the Gradio page, the ``/predict`` API and the server.
"""
