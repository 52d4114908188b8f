"""``pdfnet serve``: a local web page and HTTP API (``/predict``) for cutouts, with Gradio (the ``app`` extra).

Everything that can be checked is checked before Gradio is imported (a few seconds): that Gradio is installed, the
device, that the port is free, and that the weights and the depth model load; then the page is served, bound to
this machine unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import logging
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ServeError
from ..hub import DEFAULT_DEPTH_MODEL, LICENSE_NOTE
from .options import add_device_options, input_size

HELP = 'a local web page and HTTP API for cutouts (needs pip install "pdfnet[app]")'
INSTALL = 'pdfnet serve needs Gradio, which is not installed: pip install "pdfnet[app]"'


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Serve a page that cuts the main object out of photos (drop, paste or pick one) and an HTTP API, "
        "/predict, with the models loaded once. Bound to this machine (127.0.0.1) unless --host says otherwise."
    )
    p.epilog = LICENSE_NOTE
    p.add_argument(
        "--weights",
        default="base",
        help="the default weights: base (the authors' DIS-5K model from the Hub; default), general, or a checkpoint "
        "file (offered as 'local'); the page offers base and general too, loaded on first use",
    )
    p.add_argument(
        "--depth-model",
        default=DEFAULT_DEPTH_MODEL,
        help="the default Depth-Anything-V2: small (Apache-2.0), base, large (default; both CC-BY-NC-4.0), a repo "
        "id or folder; the page offers small, base and large too, loaded on first use",
    )
    p.add_argument(
        "--input-size",
        type=input_size,
        default=1024,
        help="the side images are resized to for the network: a multiple of 256 (default 1024, as trained)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=7860, help="port to listen on (default 7860)")
    add_device_options(p)


def gradio_installed() -> bool:
    try:
        return importlib.util.find_spec("gradio") is not None
    except (ImportError, ValueError):  # ValueError: a module blocked as sys.modules[name] = None
        return False


def check_port(host: str, port: int) -> None:
    """Raise ServeError, naming the address, when ``host``:``port`` cannot be listened on."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ServeError(f"--host {host} is not an address of this machine ({e.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        # as uvicorn binds: a port whose last connections are closing (TIME_WAIT) is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ServeError(f"port {port} on {host} is in use (another server?); choose another --port") from None
            raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """SIGTERM (``docker stop``, systemd, ``kill``) stops the server as Ctrl+C does, so its files are removed."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    """Run ``pdfnet serve`` until interrupted; returns the exit status."""
    from ..runtime import resolve_device

    if not gradio_installed():
        raise ServeError(INSTALL)
    device = str(resolve_device(args.device))
    check_port(args.host, args.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's start-up probes of its own URL

    from ..app.models import Cutter, ModelCache

    models = ModelCache(args.weights, args.depth_model, device, args.precision, args.input_size)
    models.preload()
    # Gradio reads these when imported: no analytics or version check to api.gradio.app, no Hub telemetry
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        from ..app.page import build_app, serve
    except ImportError as e:  # installed but broken, e.g. a dependency missing
        raise ServeError(f'cannot import Gradio ({e}); reinstall it: pip install "pdfnet[app]"') from None
    with tempfile.TemporaryDirectory(prefix="pdfnet-serve-") as workdir, sigterm_stops():
        serve(build_app(models, Cutter(models, workdir)), args.host, args.port)
    return 0
