"""PDFNet: high-precision dichotomous image segmentation with a depth integrity-prior and fine-grained patches."""

from .checkpoint import load_official_checkpoint, load_pdfnet, official_key, to_official_state_dict
from .config import ModelConfig
from .depth import DepthEstimator
from .losses import pdfnet_loss
from .model import DepthRefinementDecoder, PDFNet, PDFNetDecoder, PDFNetOutput, build_pdfnet
from .predictor import Predictor

__all__ = [
    "DepthEstimator",
    "DepthRefinementDecoder",
    "ModelConfig",
    "PDFNet",
    "PDFNetDecoder",
    "PDFNetOutput",
    "Predictor",
    "build_pdfnet",
    "load_official_checkpoint",
    "load_pdfnet",
    "official_key",
    "pdfnet_loss",
    "to_official_state_dict",
]
