"""PDFNet: high-precision dichotomous image segmentation with a depth integrity-prior and fine-grained patches."""

from .checkpoint import load_official_checkpoint, official_key, to_official_state_dict
from .config import ModelConfig
from .losses import pdfnet_loss
from .model import DepthRefinementDecoder, PDFNet, PDFNetDecoder, PDFNetOutput, build_pdfnet

__all__ = [
    "DepthRefinementDecoder",
    "ModelConfig",
    "PDFNet",
    "PDFNetDecoder",
    "PDFNetOutput",
    "build_pdfnet",
    "load_official_checkpoint",
    "official_key",
    "pdfnet_loss",
    "to_official_state_dict",
]
