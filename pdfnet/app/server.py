"""The server of ``pdfnet serve``: the API's FastAPI app with the Gradio page mounted on it at ``/``, served by
uvicorn on a socket bound beforehand, until SIGTERM or Ctrl+C.

Stopping is one path, whichever the signal: the worker drops the jobs that wait and stops the running one at its
next step; uvicorn answers what it can within :data:`GRACE_S` and closes; the worker's thread is joined; the
process exits with status 0. No thread is left inside torch when the interpreter finalises (see
:mod:`pdfnet.app.worker` for why that matters).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import gradio as gr
import uvicorn
from fastapi import FastAPI

from .api import Access
from .page import CSS, JS
from .worker import DeviceWorker

log = logging.getLogger("pdfnet.serve")

GRACE_S = 5  # seconds to finish answers on stopping; the page's event streams would otherwise hold it open


def address(sock: socket.socket) -> str:
    """The URL of a bound socket, as bound: ``http://127.0.0.1:7860``, ``http://[::1]:7860``, or
    ``http://0.0.0.0:7860 (every address of this machine)``."""
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return url + " (every address of this machine)" * ipaddress.ip_address(host).is_unspecified


class _Server(uvicorn.Server):
    """uvicorn's server, which on SIGINT or SIGTERM first tells the worker to stop (``on_stop``), logs the address
    it serves once it does, and does not re-raise the signal once stopped (uvicorn's default: SIGTERM would then
    kill the process with status 143 instead of letting it exit cleanly)."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None], note: str) -> None:
        super().__init__(config)
        self.on_stop, self.note = on_stop, note

    def handle_exit(self, sig: int, frame: object) -> None:
        if not self.should_exit:
            log.info("stopping (%s): dropping the jobs that wait", signal.Signals(sig).name)
        # on a thread of its own: the handler runs on the main thread between two of its steps, perhaps while that
        # thread holds the worker's (re-entrant) lock in the middle of queueing a job
        threading.Thread(target=self.on_stop, name="pdfnet-stop").start()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            log.info("PDFNet serving on %s %s; Ctrl+C stops", address(sockets[0]), self.note)


def serve(
    api: FastAPI,
    page: gr.Blocks,
    worker: DeviceWorker,
    sock: socket.socket,
    access: Access,
    max_upload_bytes: int,
) -> None:
    """Serve ``api`` with ``page`` mounted at ``/`` on the bound ``sock`` until SIGTERM or Ctrl+C; then stop
    ``worker`` and join its thread."""
    app = gr.mount_gradio_app(
        api,
        page,
        path="/",
        auth=access.login if access.required else None,
        auth_message="PDFNet: log in" + ("" if access.logins else " with any user name and the server's API key"),
        show_error=True,
        max_file_size=max_upload_bytes,
        ssr_mode=False,  # no Node server: the page is plain HTML and JavaScript from Gradio's own files
        theme=gr.themes.Soft(primary_hue="indigo"),  # its fonts ship with Gradio: nothing is fetched online
        css=CSS,
        js=JS,
        footer_links=["api", "settings"],
        run_history=False,
    )
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACE_S, lifespan="on"
    )
    note = "(the page; the API: POST /api/v1/cutout, docs at /docs)"
    server = _Server(config, lambda: worker.stop(wait=False), note)
    try:
        server.run(sockets=[sock])
    finally:
        worker.stop()  # joins the worker's thread: no job is left inside torch at exit
        sock.close()
        log.info("stopped")
