"""PDFNet: high-precision dichotomous image segmentation with a depth integrity-prior and fine-grained patches.

The public names load their modules on first use, so that ``import pdfnet.metrics`` (the scorer's worker
processes) does not pay for importing the network's dependencies.
"""

from importlib import import_module

_EXPORTS = {
    "DepthEstimator": "depth",
    "DepthRefinementDecoder": "model",
    "ModelConfig": "config",
    "PDFNet": "model",
    "PDFNetDecoder": "model",
    "PDFNetOutput": "model",
    "Predictor": "predictor",
    "build_pdfnet": "model",
    "load_official_checkpoint": "checkpoint",
    "load_pdfnet": "checkpoint",
    "official_key": "checkpoint",
    "pdfnet_loss": "losses",
    "to_official_state_dict": "checkpoint",
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
