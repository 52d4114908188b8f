"""The plain HTTP API of ``pdfnet serve``: one request, one PNG, in the page's queue.

- ``POST /api/v1/cutout``: the image as the multipart field ``file`` (or as the body, with an ``image/*`` content
  type); query options ``format`` (``rgba``, ``mask``, ``depth``), ``tta``, ``refine``, ``weights``,
  ``depth_model``; answers ``image/png`` at the image's size.
- ``POST /api/remove``: rembg's server interface (``file``; ``model``, ``om``, ``bgc``, ...), so that rembg's
  clients switch by URL. Options PDFNet does not have (alpha matting, mask post-processing, ``extras``, fetching
  ``url=``) are refused by name.
- ``GET /api/v1/health``: ready, device, models loaded, queue length.

Errors are JSON, ``{"error": "..."}``: 400 for what is not an image, is over the pixel limit, or is a bad option;
401 without the key; 413 over the size limit; 503 with ``Retry-After`` when the queue is full. No answer carries a
traceback or a path of the server's.

Every job runs on the :class:`~pdfnet.app.worker.DeviceWorker` that the page uses too; a request whose client goes
away is dropped from it before it decodes anything.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..errors import CheckpointError, DepthModelError, InputError, PDFNetError
from .models import OUTPUTS, Cutter, Options, parse_flag, printable, quoted, safe_stem, scrub
from .worker import DeviceWorker, DroppedError, Job, QueueFullError

log = logging.getLogger("pdfnet.serve")

CUTOUT_OPTIONS = ("format", "tta", "refine", "weights", "depth_model")
RAW_TYPES = ("image/", "application/octet-stream")  # content types of a request whose body is the image
CHUNK = 1 << 20
FRAMING = 1 << 16  # what a multipart body may hold beyond its file: boundaries, headers, the other fields
STALL_S = 30.0  # an upload that sends nothing for this long is answered 408 and its connection closed


class ApiError(Exception):
    """An answer other than the PNG: HTTP ``status`` and a one-line ``message`` for ``{"error": ...}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class ClientGoneError(Exception):
    """The client closed its connection before its answer was ready."""


@dataclass(frozen=True)
class Access:
    """Who may use the server: with neither set, anyone who can reach it (fine on 127.0.0.1 only).

    Args:
        api_key: the API takes ``Authorization: Bearer <api_key>``; with no logins, the page's login takes it as
            the password (any user name).
        logins: (user, password) pairs: the page's login, and the API's ``Authorization: Basic``.
    """

    api_key: str | None = None
    logins: tuple[tuple[str, str], ...] = ()

    @property
    def required(self) -> bool:
        return bool(self.api_key or self.logins)

    def allows(self, authorization: str | None) -> bool:
        """Whether a request with this ``Authorization`` header may use the API."""
        if not self.required:
            return True
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and self.api_key:
            return hmac.compare_digest(credentials.encode(), self.api_key.encode())
        if scheme.lower() == "basic" and self.logins:
            try:
                user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return self.login(user, password)
        return False

    def login(self, user: str, password: str) -> bool:
        """The page's login: a (user, password) of ``logins``; or, with none, the API key as the password."""
        if self.logins:
            found = False
            for known_user, known_password in self.logins:  # compares with every pair: no early exit to time
                same_user = hmac.compare_digest(user.encode(), known_user.encode())
                found |= same_user & hmac.compare_digest(password.encode(), known_password.encode())
            return found
        return bool(self.api_key) and hmac.compare_digest(password.encode(), self.api_key.encode())


@dataclass
class Upload:
    """An uploaded image waiting for its job, as a file of the server's (removed by :meth:`remove`)."""

    path: Path
    name: str  # the name the client sent it with (a label only: never used as a path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class CutoutApi:
    """The routes' work: uploads received into ``folder`` within ``max_bytes``, jobs on ``worker``."""

    def __init__(
        self, cutter: Cutter, worker: DeviceWorker, folder: Path, max_bytes: int, stall_s: float = STALL_S
    ) -> None:
        self.cutter, self.worker, self.folder, self.max_bytes = cutter, worker, folder, max_bytes
        self.stall_s = stall_s
        folder.mkdir(parents=True, exist_ok=True)

    async def receive(self, request: Request) -> tuple[Upload, dict[str, str]]:
        """The image of a request (the multipart field ``file``, or the body with an image content type) and the
        multipart form's other fields.

        Raises:
            ApiError: 400 no image in the request, 413 over the size limit.
            ClientGoneError: the client left during the upload.
        """
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        limit = self.max_bytes + FRAMING * (kind == "multipart/form-data")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:  # refused before a byte of it is read
            raise self._too_large()
        handle, path = tempfile.mkstemp(dir=self.folder, suffix=".upload")
        upload = Upload(Path(path), "image")
        try:
            with os.fdopen(handle, "wb") as out:
                if kind == "multipart/form-data":
                    fields = await self._receive_form(request, limit, out, upload)
                elif kind.startswith(RAW_TYPES):
                    await self._receive_body(request, limit, out)
                    fields = {}
                else:
                    raise ApiError(
                        400,
                        "send the image as the multipart form field 'file' (curl -F file=@photo.jpg), or as the "
                        f"request's body with an image/* content type (got {quoted(kind or 'none', 60)})",
                    )
            size = upload.path.stat().st_size
            if size > self.max_bytes:
                raise self._too_large()
            if size == 0:
                raise ApiError(400, f"{printable(upload.name, 80)} is empty: no image was sent")
        except BaseException:
            upload.remove()
            raise
        return upload, fields

    async def _receive_form(self, request: Request, limit: int, out: Any, upload: Upload) -> dict[str, str]:
        limited = Request(request.scope, self._limited(request.receive, limit))
        try:
            form = await limited.form(max_files=1, max_fields=32)
        except ClientDisconnect:
            raise ClientGoneError from None
        except HTTPException as e:  # a malformed multipart body, or a second file
            raise ApiError(400, f"cannot read the multipart form: {e.detail}") from None
        try:
            fields: dict[str, str] = {}
            image = None
            for key, value in form.multi_items():
                if isinstance(value, str):
                    fields[key] = value
                elif key == "file":
                    image = value
                else:
                    raise ApiError(400, f"unexpected file field {quoted(key, 40)}: send the image as 'file'")
            if image is None:
                raise ApiError(400, "no image: send it as the multipart form field 'file' (curl -F file=@photo.jpg)")
            upload.name = image.filename or "image"
            while chunk := await image.read(CHUNK):
                out.write(chunk)
            return fields
        finally:
            await form.close()

    async def _receive_body(self, request: Request, limit: int, out: Any) -> None:
        receive = self._limited(request.receive, limit)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGoneError
            out.write(message.get("body", b""))
            if not message.get("more_body", False):
                return

    def _limited(self, receive: Callable, limit: int) -> Callable:
        """``receive`` that raises a 413 once the body passes ``limit`` bytes (for bodies sent without a length),
        and a 408 when the client sends nothing for ``stall_s`` seconds (a trickling client would otherwise hold
        its connection and its half-written upload for as long as it likes)."""
        received = 0

        async def limited() -> dict:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.stall_s)
            except TimeoutError:
                raise ApiError(
                    408, f"the upload stalled: nothing was received for {self.stall_s:g} s; send it again"
                ) from None
            received += len(message.get("body", b""))
            if received > limit:
                raise self._too_large()
            return message

        return limited

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the upload is over the size limit of {self.max_bytes // 2**20} MB")

    async def run(self, request: Request, upload: Upload, work: Callable[[Job], bytes]) -> bytes:
        """Run ``work`` on the device's worker and wait for it, dropping it if the client goes away.

        Raises:
            ApiError: the answer to give instead of a PNG.
            ClientGoneError: the client left; the job was dropped (before it started, if it had not).
        """
        name = printable(upload.name)
        try:
            job = self.worker.submit(work, name, connection_open(request))
        except QueueFullError as e:
            raise ApiError(503, str(e), {"Retry-After": str(e.retry_after)}) from None
        except DroppedError:
            raise ApiError(503, "the server is stopping", {"Retry-After": "5"}) from None
        waiting = asyncio.ensure_future(job.wait())
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiting.done():  # the client left, or this request was cancelled (the server is stopping)
                job.cancel()
                waiting.cancel()
            gone.cancel()
        if waiting.cancelled():
            log.info("dropped %s: its client went away", name)
            raise ClientGoneError
        try:
            return waiting.result()
        except DroppedError:
            if self.worker.stopping:
                raise ApiError(503, "the server is stopping", {"Retry-After": "5"}) from None
            raise ClientGoneError from None
        except PDFNetError as e:
            log.info("refused %s: %s", name, printable(e, 400))
            status = 500 if isinstance(e, CheckpointError | DepthModelError) else 400
            raise ApiError(status, scrub(str(e))) from None
        except Exception as e:  # logged with its traceback by the worker
            if type(e).__name__ == "OutOfMemoryError":  # torch.cuda's
                raise ApiError(503, "out of GPU memory: try without tta", {"Retry-After": "5"}) from None
            raise ApiError(500, f"cutting out {upload.name} failed; the server's log says why") from None

    async def answer(
        self, request: Request, upload: Upload, options: Options, output: str, background: tuple[int, ...] | None
    ) -> Response:
        """The PNG of one output of ``upload``, or the error that stands for it; the upload is removed after."""
        try:
            png = await self.run(
                request,
                upload,
                lambda job: self.cutter.png(upload.path, upload.name, options, output, background, check=job.check),
            )
        finally:
            upload.remove()
        suffix = {"rgba": "cutout", "mask": "mask", "depth": "depth"}[output]
        disposition = f'inline; filename="{safe_stem(upload.name)}-{suffix}.png"'
        return Response(png, media_type="image/png", headers={"Content-Disposition": disposition})


def _version() -> str:
    try:
        return version("pdfnet")
    except PackageNotFoundError:
        return "unknown"


def connection_open(request: Request) -> Callable[[], bool]:
    """Whether ``request``'s client still holds its connection, asked of the socket itself (a peek that takes
    nothing), for the worker's thread to call before the job starts and between its steps.

    The event loop learns of a close only when it next runs, and on a busy machine the worker may start the next
    job first: 3 of 8 jobs of clients that had gone were decoded so, for nobody. The kernel knows at once. Where
    the server gives no socket (not uvicorn's transport), the answer is always True and the loop's view alone
    drops the job (:meth:`CutoutApi.run`)."""
    transport = getattr(getattr(request.receive, "__self__", None), "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return lambda: True

    def still_open() -> bool:
        try:
            with sock.dup() as peer:
                return peer.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""  # b"": the client closed it
        except BlockingIOError:  # open, nothing more sent
            return True
        except OSError:  # reset, or closed on this side
            return False

    return still_open


async def _disconnected(receive: Callable) -> None:
    """Returns when the client has closed the connection (the request's body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def cutout_options(query: dict[str, list[str]], cutter: Cutter) -> tuple[Options, str]:
    """``/api/v1/cutout``'s query options, checked: (Options, output).

    Raises:
        InputError: an unknown option, one given twice, or a bad value; naming it.
    """
    unknown = sorted(set(query) - set(CUTOUT_OPTIONS))
    if unknown:
        raise InputError(f"unknown option {quoted(unknown[0], 40)}; the options are {', '.join(CUTOUT_OPTIONS)}")
    value = {}
    for key, values in query.items():
        if len(values) > 1:
            raise InputError(f"{key} is given {len(values)} times; give it once")
        value[key] = values[0]
    output = value.get("format", "rgba").strip().lower()
    if output not in OUTPUTS:
        raise InputError(f"format must be one of {', '.join(OUTPUTS)}, got {quoted(value['format'], 40)}")
    options = Options(
        tta=parse_flag("tta", value.get("tta", False)),
        refine=parse_flag("refine", value.get("refine", True)),
        weights=value.get("weights") or None,
        depth=value.get("depth_model") or None,
    )
    cutter.models.check_choices(options.weights, options.depth, ("weights", "depth_model"))
    return options, output


def remove_options(fields: dict[str, str], query: dict[str, list[str]], cutter: Cutter) -> tuple[Options, str, Any]:
    """rembg's ``/api/remove`` options, from the form (or the query): (Options, output, background colour).

    Raises:
        InputError: a bad value, or an option PDFNet does not have set; naming it.
    """

    def get(key: str) -> str | None:
        return fields.get(key, query.get(key, [None])[-1])

    for key, default, what in [("a", False, "alpha matting"), ("ppm", False, "mask post-processing")]:
        if get(key) is not None and parse_flag(key, get(key)) != default:
            raise InputError(
                f"{key} ({what}) is not offered by PDFNet, whose mask is soft at edges already; leave {key} out"
            )
    for key, top in [("af", 255), ("ab", 255), ("ae", None)]:  # alpha-matting settings: checked, unused without a
        text = get(key)
        if text is not None and not (text.strip().isdigit() and (top is None or int(text) <= top)):
            raise InputError(f"{key} must be an integer from 0{f' to {top}' if top else ''}, got {quoted(text, 40)}")
    if get("extras"):
        raise InputError("extras (rembg's model parameters) are not offered by PDFNet; leave extras out")
    model = get("model")
    weights = None
    if model:
        choices = [value for _, value in cutter.models.weight_choices]
        if model not in choices:
            raise InputError(
                f"model {quoted(model, 40)} is not served here: this is PDFNet; leave model out, or choose one "
                f"of {', '.join(choices)}"
            )
        weights = model
    only_mask = parse_flag("om", get("om")) if get("om") is not None else False
    background = None
    if get("bgc"):
        parts = get("bgc").split(",")
        if not (len(parts) in (3, 4) and all(p.strip().isdigit() and int(p) <= 255 for p in parts)):
            raise InputError(f"bgc must be r,g,b or r,g,b,a from 0 to 255, got {quoted(get('bgc'), 40)}")
        background = tuple(int(p) for p in parts)
    return Options(weights=weights), "mask" if only_mask else "rgba", background


def build_api(
    cutter: Cutter,
    worker: DeviceWorker,
    access: Access,
    upload_folder: Path,
    max_upload_bytes: int,
    stall_s: float = STALL_S,
) -> FastAPI:
    """The FastAPI app with the API's routes (the page is mounted on it at ``/`` by :mod:`pdfnet.app.server`);
    uploads that send nothing for ``stall_s`` seconds are answered 408."""
    api = CutoutApi(cutter, worker, upload_folder, max_upload_bytes, stall_s)
    app = FastAPI(
        title="PDFNet",
        version=_version(),
        description=(
            "Cut the main object out of a photo: one request, one PNG at the photo's size. Every request waits in "
            'one queue per device with the page\'s. Errors are JSON: {"error": "..."}.'
        ),
        docs_url="/docs",
        redoc_url=None,
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        headers = dict(e.headers)
        if e.status in (408, 413):  # the rest of the body is not read: the connection cannot carry another request
            headers["Connection"] = "close"
        if e.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="pdfnet"'
        return JSONResponse({"error": e.message}, e.status, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, e.status_code, getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body"))
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, 400)

    def authorise(request: Request) -> None:
        if not access.allows(request.headers.get("authorization")):
            raise ApiError(401, "this server needs its key: send the header 'Authorization: Bearer <key>'")

    async def image_request(request: Request, parse: Callable[[dict[str, str]], tuple[Options, str, Any]]) -> Response:
        authorise(request)
        try:
            upload, fields = await api.receive(request)
        except ClientGoneError:
            return Response(status_code=400)  # nobody reads it
        try:
            options, output, background = parse(fields)
        except InputError as e:
            upload.remove()
            raise ApiError(400, str(e)) from None
        try:
            return await api.answer(request, upload, options, output, background)
        except ClientGoneError:
            return Response(status_code=400)

    body = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": "the image"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    png = {200: {"content": {"image/png": {}}, "description": "the PNG, at the image's size"}}
    errors = {
        400: {"description": 'not an image, over the pixel limit, or a bad option: {"error": "..."}'},
        401: {"description": "no key or a wrong one"},
        413: {"description": "over the size limit"},
        503: {"description": "the queue is full (see Retry-After), or the server is stopping"},
    }

    @app.post(
        "/api/v1/cutout",
        summary="Cut out the main object",
        response_class=Response,
        responses={**png, **errors},
        openapi_extra={"requestBody": body},
    )
    async def cutout(
        request: Request,
        format: str = "rgba",  # noqa: A002 (the option's name)
        tta: str = "false",
        refine: str = "true",
        weights: str | None = None,
        depth_model: str | None = None,
    ) -> Response:
        """The image as the multipart field ``file``, or as the body with an ``image/*`` content type. ``format``:
        ``rgba`` (the cutout: the photo's colours, refined at soft edges unless ``refine=false``, with the mask as
        alpha), ``mask`` (8-bit grey) or ``depth`` (the pseudo-depth, 8-bit grey). ``tta``: test-time augmentation
        (6 passes). ``weights``, ``depth_model``: choices the page offers. Booleans are true/false/1/0."""
        query = {key: request.query_params.getlist(key) for key in request.query_params}

        def parse(fields: dict[str, str]) -> tuple[Options, str, None]:
            if fields:
                raise InputError(f"unexpected form field {quoted(next(iter(fields)), 40)}: options go in the query")
            return (*cutout_options(query, cutter), None)

        # checked before the upload is read as well, so that a bad option costs no upload
        try:
            authorise(request)
            cutout_options(query, cutter)
        except InputError as e:
            raise ApiError(400, str(e)) from None
        return await image_request(request, parse)

    @app.post(
        "/api/remove",
        summary="rembg's interface: remove the background",
        response_class=Response,
        responses={**png, **errors},
        openapi_extra={"requestBody": body},
    )
    async def remove(request: Request) -> Response:
        """rembg's ``POST /api/remove``: the image as ``file``; ``om=true`` answers the mask only; ``bgc=r,g,b,a``
        puts the cutout on a colour; ``model``: a weights choice (or left out). rembg's alpha matting (``a``),
        ``ppm`` and ``extras`` are refused by name."""
        query = {key: request.query_params.getlist(key) for key in request.query_params}
        return await image_request(request, lambda fields: remove_options(fields, query, cutter))

    @app.get("/api/remove", summary="rembg's ?url= form: refused", responses={400: errors[400]})
    async def remove_url(request: Request) -> Response:
        """rembg fetches ``?url=`` itself; this server fetches nothing (a server that fetches what it is told can be
        pointed at its own network). POST the image instead."""
        authorise(request)
        raise ApiError(400, "url= is not offered: this server fetches no URLs; POST the image as the form field 'file'")

    @app.get("/api/v1/health", summary="Ready, device, models loaded, queue length")
    async def health(request: Request) -> dict:
        authorise(request)
        return {
            "ready": not worker.stopping,
            "device": cutter.models.device,
            "models_loaded": cutter.models.loaded(),
            "queue_length": worker.queue_length(),
            "queue_limit": worker.max_waiting,
            "jobs": {**worker.counts(), "done": worker.done, "dropped": worker.dropped, "failed": worker.failed},
        }

    routes = {"v1/cutout": "POST", "remove": "POST", "v1/health": "GET"}

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def elsewhere(request: Request, rest: str) -> Response:
        if rest.strip("/") in routes:
            allowed = routes[rest.strip("/")]
            raise ApiError(405, f"{request.method} is not answered here; use {allowed}", {"Allow": allowed})
        raise ApiError(404, "no such route; the API: POST /api/v1/cutout, POST /api/remove, GET /api/v1/health, /docs")

    return app
