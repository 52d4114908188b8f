"""``pdfnet serve``: a local web page and HTTP API (``POST /api/v1/cutout``, rembg's ``/api/remove``) for cutouts,
with Gradio (the ``app`` extra).

Everything that can be checked is checked before Gradio is imported (a few seconds): that Gradio is installed, the
device, the logins, that an address other than this machine's own has a login, that the port is free (it is bound
then, and kept), and that the weights and the depth model load; then the page and the API are served.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import ipaddress
import logging
import os
import socket
import tempfile
from pathlib import Path

from ..errors import ServeError
from ..hub import DEFAULT_DEPTH_MODEL, LICENSE_NOTE
from .options import add_device_options, input_size

HELP = 'a local web page and HTTP API for cutouts (needs pip install "pdfnet[app]")'
INSTALL = 'pdfnet serve needs Gradio, which is not installed: pip install "pdfnet[app]"'
KEY_VARIABLE = "PDFNET_API_KEY"


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text}")
    return value


def login_source(text: str) -> Path | tuple[str, str]:
    """``--auth``: a file of ``user:password`` lines, or one ``user:password``."""
    if os.path.isfile(text):
        return Path(text)
    user, colon, password = text.partition(":")
    if not (colon and user and password):
        shown = f"{text!r} (no such file)" if not colon else "a user or password that is empty"
        raise argparse.ArgumentTypeError(f"expected USER:PASSWORD or a file of USER:PASSWORD lines, got {shown}")
    return user, password


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Serve a page that cuts the main object out of photos (drop, paste or pick one) and an HTTP API "
        "(POST /api/v1/cutout; rembg's POST /api/remove; docs at /docs), with the models loaded once. Bound to this "
        "machine (127.0.0.1) unless --host says otherwise, which then needs --api-key or --auth."
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
    p.add_argument(
        "--api-key",
        default=None,
        help=f"the API then needs 'Authorization: Bearer KEY' (and the page, without --auth, takes KEY as its "
        f"password); better set in the environment as {KEY_VARIABLE}, which keeps it out of the process list",
    )
    p.add_argument(
        "--auth",
        action="append",
        type=login_source,
        metavar="USER:PASSWORD|FILE",
        help="a login for the page (the API takes it too, as HTTP Basic); or a file of USER:PASSWORD lines; "
        "may be repeated",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve an address other than this machine's own with no login at all, knowingly",
    )
    p.add_argument(
        "--queue-size",
        type=positive_int,
        default=32,
        help="cutouts that may wait for the device, page and API together; more are refused (HTTP 503, "
        "Retry-After) (default 32)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=positive_int,
        default=100,
        help="the largest upload, in MB (default 100); images over 64 megapixels are refused whatever their size",
    )
    p.add_argument(
        "--upload-timeout",
        type=positive_int,
        default=30,
        metavar="SECONDS",
        help="an API upload that sends nothing for this long is answered 408 and its connection closed (default 30)",
    )
    add_device_options(p)


def read_logins(sources: list[Path | tuple[str, str]] | None) -> tuple[tuple[str, str], ...]:
    """The (user, password) pairs of the ``--auth`` values.

    Raises:
        ServeError: a file line that is not ``user:password``, naming the file and line (not the line itself).
    """
    logins = []
    for source in sources or ():
        if isinstance(source, tuple):
            logins.append(source)
            continue
        try:
            lines = source.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ServeError(f"cannot read --auth file {source}: {getattr(e, 'strerror', None) or e}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            user, colon, password = line.strip().partition(":")
            if not (colon and user and password):
                raise ServeError(f"{source}, line {number}: expected USER:PASSWORD")
            logins.append((user, password))
        if not logins:
            raise ServeError(f"--auth file {source} holds no USER:PASSWORD line")
    return tuple(logins)


def api_key(given: str | None) -> str | None:
    """``--api-key``, else :data:`KEY_VARIABLE` from the environment; None if neither is set.

    Raises:
        ServeError: a key that cannot be sent in an HTTP header (spaces, control characters).
    """
    key = given if given is not None else os.environ.get(KEY_VARIABLE) or None
    if key is not None and not (key.isascii() and key.isprintable() and " " not in key and key):
        source = "--api-key" if given is not None else KEY_VARIABLE
        raise ServeError(f"{source}: an API key must be printable ASCII without spaces (it is sent in a header)")
    return key


def check_exposure(host: str, port: int, protected: bool, insecure: bool) -> bool:
    """Whether ``host`` is reachable from other machines (an address that is not a loopback one).

    Raises:
        ServeError: it is, with neither a key nor a login, and not ``insecure``.
    """
    address = resolve(host, port)[-1][0]
    exposed = not ipaddress.ip_address(address.split("%")[0]).is_loopback
    if exposed and not protected and not insecure:
        raise ServeError(
            f"--host {host} opens the server to other machines with no login: add --api-key KEY (or set "
            f"{KEY_VARIABLE}) for the API and --auth USER:PASSWORD for the page, or --insecure to serve it open"
        )
    return exposed


def gradio_installed() -> bool:
    try:
        return importlib.util.find_spec("gradio") is not None
    except (ImportError, ValueError):  # ValueError: a module blocked as sys.modules[name] = None
        return False


def resolve(host: str, port: int) -> tuple:
    """The first of ``getaddrinfo``'s answers for ``host``: (family, type, proto, canonname, sockaddr).

    Raises:
        ServeError: ``host`` is not an address of this machine.
    """
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ServeError(f"--host {host} is not an address of this machine ({e.strerror})") from None


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port``, which the server then listens on (so that the port checked is the port
    served, and the start line can name the address bound).

    Raises:
        ServeError: naming the address, when it cannot be bound.
    """
    family, kind, proto, _, address = resolve(host, port)
    sock = socket.socket(family, kind, proto)
    # as uvicorn binds: a port whose last connections are closing (TIME_WAIT) is free
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" serves IPv4 too
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on {host} is in use (another server?); choose another --port") from None
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def run(args: argparse.Namespace) -> int:
    """Run ``pdfnet serve`` until SIGTERM or Ctrl+C; returns the exit status (0 when stopped so)."""
    from ..runtime import resolve_device

    if not gradio_installed():
        raise ServeError(INSTALL)
    device = str(resolve_device(args.device))
    key, logins = api_key(args.api_key), read_logins(args.auth)
    exposed = check_exposure(args.host, args.port, bool(key or logins), args.insecure)
    sock = bind(args.host, args.port)
    try:
        return _serve(args, device, key, logins, exposed, sock)
    finally:
        sock.close()


def _serve(args: argparse.Namespace, device: str, key: str | None, logins: tuple, exposed: bool, sock) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's start-up probes of its own URL
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its "Loading weights" bar wrote carriage returns into the log
    log = logging.getLogger("pdfnet.serve")
    if exposed and not (key or logins):
        log.warning(
            "WARNING: --insecure: serving %s with no login; anyone who can reach this machine can use it", args.host
        )

    from ..app.models import Cutter, ModelCache
    from ..memory import limit_malloc_arenas

    limit_malloc_arenas()  # the web server's threads parse uploads: each would otherwise keep an arena of its own

    models = ModelCache(args.weights, args.depth_model, device, args.precision, args.input_size)
    models.preload()
    # Gradio reads these when imported: no analytics or version check to api.gradio.app, no Hub telemetry
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        from ..app.api import Access, build_api
        from ..app.page import build_app
        from ..app.server import serve
        from ..app.worker import DeviceWorker
    except ImportError as e:  # installed but broken, e.g. a dependency missing
        raise ServeError(f'cannot import Gradio ({e}); reinstall it: pip install "pdfnet[app]"') from None
    access = Access(key, logins)
    worker = DeviceWorker(device, args.queue_size).start()
    try:
        with tempfile.TemporaryDirectory(prefix="pdfnet-serve-") as workdir:
            cutter = Cutter(models, workdir)
            max_bytes = args.max_upload_mb * 2**20
            api = build_api(cutter, worker, access, Path(workdir) / "uploads", max_bytes, args.upload_timeout)
            serve(api, build_app(models, cutter, worker), worker, sock, access, max_bytes)
    finally:
        worker.stop()
    return 0
