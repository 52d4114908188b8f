"""The notebook demo runs top to bottom, offline, with tiny models."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_demo_notebook_executes(tiny_official_checkpoint, tiny_depth_model, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PDFNET_WEIGHTS", tiny_official_checkpoint)
    monkeypatch.setenv("PDFNET_DEPTH_MODEL", tiny_depth_model)
    monkeypatch.setenv("PDFNET_INPUT_SIZE", "256")
    notebook = nbformat.read(ROOT / "demo.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "(300, 451, 3) (300, 451) (300, 451) (300, 451, 4)" in printed
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(figures) == 1  # the four pictures side by side
