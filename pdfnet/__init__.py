"""PDFNet: high-precision dichotomous image segmentation with a depth integrity-prior and fine-grained patches.

The package is layered, each layer importing only those below it:

- ``runtime``, ``errors``, ``config``, ``io``, ``video``: constants, precisions and devices; error types; typed
  configs; reading images and writing files atomically; reading and writing videos.
- ``model``: the network (Swin encoder, FSE/CoA decoder, patches), its fast paths, and loading weights.
- ``data``: dataset layouts, the shared pre- and post-processing, training samples, Depth-Anything-V2 depth.
- ``inference``: the :class:`Predictor`, the foreground colours of cutouts, and how sure a mask is.
- ``review``: the review page of a dataset made by ``pdfnet label``.
- ``evaluation``: the DIS metrics, scoring folders, and ``test.py``'s predict-and-score.
- ``training``: losses, validation, checkpoints and the training loop.
- ``app``: ``pdfnet serve``'s web page and HTTP API; the one place that imports Gradio (the ``app`` extra), and
  only the ``serve`` command imports it.
- ``commands`` and ``cli``: the ``pdfnet`` command.

The public names below load their modules on first use, so that ``import pdfnet.evaluation.metrics`` (the
scorer's worker processes) does not pay for importing the network's dependencies.
"""

from importlib import import_module

_EXPORTS = {
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "DepthEstimator": "data.depth",
    "DepthModelError": "errors",
    "DepthRefinementDecoder": "model.network",
    "ImageReadError": "errors",
    "InputError": "errors",
    "ModelConfig": "config",
    "PDFNet": "model.network",
    "PDFNetDecoder": "model.network",
    "PDFNetError": "errors",
    "PDFNetOutput": "model.network",
    "Predictor": "inference.predictor",
    "build_pdfnet": "model.network",
    "evaluate_predictions": "evaluation.folders",
    "fastpath": "model.fastpath",
    "load_official_checkpoint": "model.checkpoint",
    "load_pdfnet": "model.checkpoint",
    "official_key": "model.checkpoint",
    "pdfnet_loss": "training.losses",
    "refine_foreground": "inference.foreground",
    "refine_foreground_tensor": "inference.foreground",
    "set_fastpath": "model.fastpath",
    "to_official_state_dict": "model.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pdfnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
