"""The errors PDFNet raises for a user's mistake: one base type, each message naming the file or key at fault.

The command-line tools print such an error as one line (``error: ...``) and exit non-zero; anything else that
escapes is a bug. The Python API raises these types (or their subclasses) for bad files and bad arguments.
"""

from __future__ import annotations


class PDFNetError(Exception):
    """Base of every error caused by an input, file or setting rather than by a bug."""


class ConfigError(PDFNetError, ValueError):
    """A configuration key that does not exist, a value of the wrong type or out of range, or a file that is not
    valid YAML; the message names the key (and the file and line)."""


class CheckpointError(PDFNetError, ValueError):
    """A checkpoint that cannot be used: missing, empty, truncated, not a checkpoint, refused as unsafe, or of
    another architecture. The message names the file and what is wrong."""


class InputError(PDFNetError, ValueError):
    """An argument of the Python API with the wrong type, dtype or shape; the message says what was expected."""


class ImageReadError(PDFNetError, OSError):
    """An input file that cannot be read as an image (or video); the message names the file."""


class VideoReadError(ImageReadError):
    """A video that cannot be read: missing, not a video, truncated or corrupt; the message names the file (and
    the frame near which it broke)."""


class DepthModelError(PDFNetError, RuntimeError):
    """The depth model cannot be loaded; the message says what to pass instead."""


class OutputError(PDFNetError, OSError):
    """An output location that cannot be written, or that would replace an input or a finished run."""


class DatasetError(PDFNetError, FileNotFoundError):
    """A dataset folder that is missing something (a split, masks, depth maps); the message names what and, for
    depth maps, the command that makes them."""


class EvaluationError(PDFNetError, RuntimeError):
    """Predictions cannot be scored as asked (missing or unreadable files); the message names them."""


class ServeError(PDFNetError, OSError):
    """``pdfnet serve`` cannot start as asked: Gradio is not installed, or the address or port cannot be used;
    the message names it and what to do instead."""


def first_line(error: BaseException) -> str:
    """An exception's message, first line only (those of the Hub, ONNX Runtime and transformers span several), or
    its type's name when it has none: what a one-line error quotes of a library's."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
