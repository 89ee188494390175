"""The scoring service: upload a clip or an image (or name a file on the server's storage root), get a
job id, poll or wait for the result. A bounded worker pool scores; SQLite (or any SQLAlchemy URL)
keeps jobs and results across restarts. Also: model list, health, Prometheus metrics, the OpenAPI
spec at ``/openapi.json`` and a demo page at ``/``.

Uploads stream straight into ``<data_dir>/uploads`` (never a system temp folder) under a name the
server makes; the client's file name is only displayed. Uploads are deleted when their job ends
unless the client asked ``keep=true`` or the server keeps all. With API keys configured, every
``/v1`` call needs ``X-API-Key: <key>`` (or ``Authorization: Bearer <key>``) and sees only its own jobs.
"""
from __future__ import annotations

from gameqa.models.registry import DEFAULT_MODEL

import asyncio
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from gameqa import __version__
from gameqa.errors import GameQAError
from gameqa.result import ScoreResult
from gameqa.scoring import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from gameqa.serve.jobs import JobRunner, QueueFull
from gameqa.serve.metrics import Metrics
from gameqa.serve.store import ENDED, QUEUED, Job, JobStore

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger("gameqa.serve")

STATIC_DIR = Path(str(resources.files("gameqa.serve") / "static"))
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES  # an upload keeps its suffix when it is one of these
SAMPLE_PATTERN = (r"^(all|every:[1-9][0-9]{0,8}|uniform:[1-9][0-9]{0,8}"
                  r"|fps:([1-9][0-9]{0,2}|1000|[0-9]{1,3}\.[0-9]{0,5}[1-9]))$")
MAX_FRAME_INDEX = 2**31 - 1


@dataclass
class ServeConfig:
    """How the service runs. ``api_keys`` maps key -> client name; empty means no key is needed."""

    data_dir: Path
    db_url: Optional[str] = None
    storage_root: Optional[Path] = None
    api_keys: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    max_queued: int = 32
    max_upload_bytes: int = 256 * 1024 * 1024
    keep_uploads: bool = False
    default_model: str = DEFAULT_MODEL
    default_sample: str = "fps:2"
    on_restart: Literal["resume", "fail"] = "resume"
    max_wait_s: float = 30.0

    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{Path(self.data_dir).resolve() / 'jobs.sqlite3'}"


# -- wire types (they make the OpenAPI spec) --------------------------------------------------------
class WorstFrame(BaseModel):
    frame_index: int
    timestamp: float
    score: float
    thumbnail_url: Optional[str] = Field(None, description="PNG of the frame (same API key), when kept")


class JobView(BaseModel):
    """A job as the client sees it; ``result`` is set once ``status`` is ``done``."""

    id: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    source: Literal["upload", "storage"]
    filename: str
    model: str
    sample: str
    size_bytes: int
    created_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    progress: Optional[float] = Field(None, description="0-1 while running, when the frame count is known")
    frames_done: Optional[int] = None
    error: Optional[str] = None
    result: Optional[ScoreResult] = None
    worst_frames: list[WorstFrame] = Field(default_factory=list)


def _storage_request_model(model_names: list[str]) -> type[BaseModel]:
    """The body of POST /v1/storage-jobs; its model field lists this server's models."""

    class StorageJobRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        path: str = Field(..., min_length=1, max_length=4096, pattern=r"^[^\x00]+$",
                          description="Path relative to the storage root")
        model: Optional[str] = Field(None, max_length=255, json_schema_extra={"enum": model_names},
                                     description="Registered no-reference model (GET /v1/models)")
        sample: Optional[str] = Field(None, max_length=64, pattern=SAMPLE_PATTERN)

    return StorageJobRequest


class ModelView(BaseModel):
    name: str
    kind: str
    reference: str
    score_range: list[float]
    lower_better: bool
    version: str
    engine: str
    pooling: str
    description: str


class Health(BaseModel):
    status: str
    version: str
    workers: int
    queue_depth: int
    max_queued: int
    running: int


class ErrorBody(BaseModel):
    detail: str


_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 415, 429)}


def create_app(config: ServeConfig) -> FastAPI:
    """Build the service for one data folder; jobs start running when the app starts."""
    data_dir = Path(config.data_dir).resolve()
    uploads = data_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    storage_root = Path(config.storage_root).resolve() if config.storage_root else None
    metrics = Metrics()
    store = JobStore(config.database_url())
    runner = JobRunner(store, metrics, workers=config.workers, max_queued=config.max_queued)
    uploading = {"n": 0}
    metrics.gauge("gameqa_queue_depth", "Jobs waiting for a worker.", lambda: runner.queue_depth)
    metrics.gauge("gameqa_jobs_running", "Jobs being scored now.", lambda: runner.running)
    metrics.gauge("gameqa_uploads_in_progress", "Uploads being received now.", lambda: uploading["n"])
    page = (STATIC_DIR / "index.html").read_text()
    from gameqa.models.registry import list_models

    model_names = sorted({c.name for c in list_models() if not c.full_reference} | {config.default_model})
    StorageJobRequest = _storage_request_model(model_names)

    @asynccontextmanager
    async def lifespan(_app):
        runner.start(on_restart=config.on_restart)
        yield
        await asyncio.get_running_loop().run_in_executor(None, runner.stop)
        store.close()

    app = FastAPI(title="gameqa scoring service", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # their pages load scripts from a CDN; the spec is at /openapi.json
                  description=__doc__)
    app.state.runner, app.state.store, app.state.config, app.state.metrics = runner, store, config, metrics
    app.add_middleware(_MetricsAndHeaders, metrics=metrics, routes=lambda: app.routes)

    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Client API key")
    keys = [(k.encode(), name) for k, name in config.api_keys.items()]

    def client(request: Request, api_key: Optional[str] = Depends(key_header)) -> str:
        if not keys:
            return "anonymous"
        given = api_key
        auth = request.headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            raise HTTPException(401, "an API key is needed: send the header X-API-Key",
                                headers={"WWW-Authenticate": "ApiKey"})
        given_bytes = given.encode("utf-8", "surrogateescape")
        for key, name in keys:
            if hmac.compare_digest(key, given_bytes):
                return name
        raise HTTPException(401, "wrong API key", headers={"WWW-Authenticate": "ApiKey"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(_request, _exc: ClientDisconnect):
        # a client that hung up mid-upload: its partial file is removed; nothing is wrong with the service
        log.info("a client disconnected before its upload was complete")
        return JSONResponse({"detail": "client disconnected"}, status_code=400)

    @app.exception_handler(Exception)
    async def _server_error(_request, exc: Exception):
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse({"detail": "internal error (see the service log)"}, status_code=500)

    # -- pages and probes -------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' blob: data:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        return HTMLResponse(page.replace("{{NONCE}}", nonce), headers={"Content-Security-Policy": csp})

    @app.get("/healthz", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness and load: workers, queue depth and bound, jobs running."""
        return Health(status="ok", version=__version__, workers=runner.workers, queue_depth=runner.queue_depth,
                      max_queued=runner.max_queued, running=runner.running)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["service"])
    def prometheus_metrics() -> PlainTextResponse:
        """Prometheus text format: requests, latency, queue depth, jobs, frames scored."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", response_model=list[ModelView], tags=["models"], responses=_ERRORS)
    def models(_client: str = Depends(client)) -> list[ModelView]:
        """The registered models: name, what they score, range, direction, version."""
        from gameqa.models.registry import list_models

        return [ModelView(**{k: v for k, v in c.to_dict().items() if k != "weights"}) for c in list_models()]

    # -- jobs ---------------------------------------------------------------------------------------
    def check_job_params(model: Optional[str], sample: Optional[str]) -> tuple[str, str]:
        from gameqa.media import SamplePolicy
        from gameqa.models.registry import get_card

        model = model or config.default_model
        sample = sample or config.default_sample
        if "/" in model or "\\" in model or model.startswith("."):
            raise HTTPException(400, f"unknown model {model!r}: give a registered model name (GET /v1/models)")
        try:
            card = get_card(model)
            SamplePolicy.parse(sample)
        except GameQAError as exc:
            raise HTTPException(400, exc.problem) from None
        except ValueError:
            raise HTTPException(400, f"bad sample policy {sample!r}: expected one of all, every:N, fps:F, uniform:K") from None
        if card.full_reference:
            raise HTTPException(400, f"model {model!r} is full-reference; the service scores with no-reference models")
        return card.name, sample

    def refuse_when_full() -> None:
        if runner.queue_depth + uploading["n"] >= runner.max_queued:
            metrics.rejected.inc("queue_full")
            raise HTTPException(429, f"the queue is full ({runner.max_queued} jobs); retry later",
                                headers={"Retry-After": "5"})

    def view(job: Job) -> JobView:
        progress = runner.progress(job.id)
        worst = []
        if job.result:
            result = ScoreResult.model_validate(job.result)
            thumbs = set(job.frame_thumbs)
            for index, stamp, score in result.worst_frames(3):
                url = f"/v1/jobs/{job.id}/frames/{index}" if index in thumbs else None
                worst.append(WorstFrame(frame_index=index, timestamp=stamp, score=score, thumbnail_url=url))
        else:
            result = None
        return JobView(id=job.id, status=job.status, source=job.source, filename=job.filename, model=job.model,
                       sample=job.sample, size_bytes=job.size_bytes, created_at=job.created_at,
                       started_at=job.started_at, finished_at=job.finished_at,
                       progress=(1.0 if job.status == "done" else progress.fraction if progress else None),
                       frames_done=progress.frames_done if progress else (len(result.frame_scores) if result else None),
                       error=job.error, result=result, worst_frames=worst)

    def owned_job(job_id: str, owner: str) -> Job:
        job = store.get(job_id)
        if job is None or job.owner != owner:
            raise HTTPException(404, f"no job {job_id}")
        return job

    upload_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }}}

    @app.post("/v1/jobs", status_code=202, response_model=JobView, tags=["jobs"], openapi_extra=upload_body,
              responses=_ERRORS)
    async def upload_job(
        request: Request,
        model: Optional[str] = Query(None, max_length=255, json_schema_extra={"enum": model_names},
                                     description="Registered no-reference model (default: the server's)"),
        sample: Optional[str] = Query(None, max_length=64, pattern=SAMPLE_PATTERN,
                                      description="Frame sampling: all, every:N, fps:F, uniform:K"),
        filename: Optional[str] = Query(None, max_length=255, description="File name, for a raw (octet-stream) body (default: upload)"),
        keep: bool = Query(False, description="Keep the uploaded file on the server after the job ends"),
        owner: str = Depends(client),
    ) -> JSONResponse:
        """Upload a video or image (multipart field ``file``, or the raw bytes with ``?filename=``) and get a job."""
        model, sample = check_job_params(model, sample)
        refuse_when_full()
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > config.max_upload_bytes + 64 * 1024:
            metrics.rejected.inc("too_large")
            raise HTTPException(413, f"upload is over the limit of {config.max_upload_bytes} bytes")
        job_id = uuid.uuid4().hex
        part = uploads / f".{job_id}.part"
        uploading["n"] += 1
        try:
            name, size = await _receive(request, part, filename, config.max_upload_bytes, metrics)
            name = _check_name(name)
            kind_problem = await asyncio.get_running_loop().run_in_executor(None, _media_problem, part)
            if kind_problem:
                metrics.rejected.inc("not_media")
                raise HTTPException(415, f"{name}: {kind_problem}")
            suffix = Path(name).suffix.lower()
            final = uploads / f"{job_id}{suffix if suffix in MEDIA_SUFFIXES else ''}"
            os.replace(part, final)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            uploading["n"] -= 1
        job = Job(id=job_id, owner=owner, status=QUEUED, source="upload", filename=name, media_path=str(final),
                  keep_file=bool(keep or config.keep_uploads), model=model, sample=sample, size_bytes=size,
                  created_at=time.time())
        try:
            runner.submit(job)
        except QueueFull as exc:
            final.unlink(missing_ok=True)
            metrics.rejected.inc("queue_full")
            raise HTTPException(429, str(exc), headers={"Retry-After": "5"}) from None
        return JSONResponse(view(job).model_dump(mode="json"), status_code=202,
                            headers={"Location": f"/v1/jobs/{job_id}"})

    def storage_job(body, owner: str = Depends(client)) -> JSONResponse:
        """Score a file that is already under the server's storage root (``--storage-root``)."""
        if storage_root is None:
            raise HTTPException(403, "this server has no storage root; upload the file instead")
        model, sample = check_job_params(body.model, body.sample)
        if "\x00" in body.path:
            raise HTTPException(400, "path holds a NUL character")
        try:
            target = (storage_root / body.path).resolve()
        except (OSError, RuntimeError, ValueError):
            raise HTTPException(400, f"{body.path}: not a usable path") from None
        if target != storage_root and storage_root not in target.parents:
            raise HTTPException(403, f"{body.path}: outside the storage root")
        try:
            if not target.is_file():
                raise HTTPException(404, f"{body.path}: no such file under the storage root")
            size = target.stat().st_size
        except OSError as exc:
            raise HTTPException(400, f"{body.path}: not a usable path ({exc.strerror})") from None
        problem = _media_problem(target)
        if problem:
            raise HTTPException(415, f"{body.path}: {problem}")
        refuse_when_full()
        job = Job(id=uuid.uuid4().hex, owner=owner, status=QUEUED, source="storage", filename=body.path,
                  media_path=str(target), keep_file=True, model=model, sample=sample,
                  size_bytes=size, created_at=time.time())
        try:
            runner.submit(job)
        except QueueFull as exc:
            metrics.rejected.inc("queue_full")
            raise HTTPException(429, str(exc), headers={"Retry-After": "5"}) from None
        return JSONResponse(view(job).model_dump(mode="json"), status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    storage_job.__annotations__["body"] = StorageJobRequest  # a per-app class (its model enum)
    app.post("/v1/storage-jobs", status_code=202, response_model=JobView, tags=["jobs"],
             responses=_ERRORS)(storage_job)

    @app.get("/v1/jobs", response_model=list[JobView], tags=["jobs"], responses=_ERRORS)
    def list_jobs(
        status: Optional[Literal["queued", "running", "done", "failed", "cancelled"]] = None,
        limit: int = Query(50, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=2**31 - 1),
        owner: str = Depends(client),
    ) -> list[JobView]:
        """This client's jobs, newest first (page with ``offset``)."""
        return [view(j) for j in store.list(owner=owner, status=status, limit=limit, offset=offset)]

    @app.get("/v1/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses=_ERRORS)
    async def get_job(
        job_id: str = PathParam(..., pattern=JOB_ID_PATTERN),
        wait: float = Query(0.0, ge=0.0, le=config.max_wait_s, description="Seconds to wait for the job to end"),
        owner: str = Depends(client),
    ) -> JobView:
        """A job's state and, once done, its result. ``wait`` holds the reply until the job ends (long poll)."""
        job = owned_job(job_id, owner)
        if wait > 0 and job.status not in ENDED:
            event = runner.event(job_id)
            deadline = time.monotonic() + wait
            while event is not None and not event.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            job = owned_job(job_id, owner)
        return view(job)

    @app.delete("/v1/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses=_ERRORS)
    def cancel_job(job_id: str = PathParam(..., pattern=JOB_ID_PATTERN), owner: str = Depends(client)) -> JobView:
        """Cancel a queued job (a running or ended one answers 409)."""
        job = owned_job(job_id, owner)
        if job.status != QUEUED or not runner.cancel(job):
            raise HTTPException(409, f"job {job_id} is {store.get(job_id).status}; only a queued job can be cancelled")
        return view(store.get(job_id))

    @app.get("/v1/jobs/{job_id}/frames/{frame_index}", tags=["jobs"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}, **_ERRORS})
    def job_frame(job_id: str = PathParam(..., pattern=JOB_ID_PATTERN), frame_index: int = PathParam(..., ge=0, le=MAX_FRAME_INDEX),
                  owner: str = Depends(client)) -> Response:
        """A thumbnail (PNG) of one of the job's worst frames."""
        owned_job(job_id, owner)
        png = store.thumb(job_id, frame_index)
        if png is None:
            raise HTTPException(404, f"no kept thumbnail for frame {frame_index} of job {job_id}")
        return Response(png, media_type="image/png")

    return app


# -- uploads -----------------------------------------------------------------------------------------
async def _receive(request: Request, part: Path, filename: Optional[str], limit: int,
                   metrics: Metrics) -> tuple[str, int]:
    """Stream the body into ``part``; return the client's file name and the byte count."""
    ctype = request.headers.get("content-type", "")
    if ctype.lower().startswith("multipart/form-data"):
        return await _receive_multipart(request, part, ctype, limit, metrics)
    filename = filename or "upload"  # the kind is read from the content; the name is only shown
    size = 0
    with open(part, "wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                metrics.rejected.inc("too_large")
                raise HTTPException(413, f"upload is over the limit of {limit} bytes")
            out.write(chunk)
    if size == 0:
        raise HTTPException(400, f"{filename}: empty upload (0 bytes)")
    return filename, size


async def _receive_multipart(request: Request, part: Path, ctype: str, limit: int,
                             metrics: Metrics) -> tuple[str, int]:
    from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

    _, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "multipart body without a boundary")
    state = {"headers": {}, "field": b"", "value": b"", "is_file": False, "name": None, "size": 0,
             "found": False, "too_large": False, "bad": None}
    out = open(part, "wb")

    def on_part_begin():
        state["headers"], state["is_file"] = {}, False

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        if disp.get(b"name") == b"file" and not state["found"]:
            state["is_file"], state["found"] = True, True
            raw_name = disp.get(b"filename")
            state["name"] = raw_name.decode("utf-8", "replace") if raw_name is not None else ""

    def on_part_data(data, start, end):
        if state["is_file"] and not state["too_large"]:
            state["size"] += end - start
            if state["size"] > limit:
                state["too_large"] = True
                return
            out.write(data[start:end])

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
    })
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if state["too_large"]:
                metrics.rejected.inc("too_large")
                raise HTTPException(413, f"upload is over the limit of {limit} bytes")
        parser.finalize()
    except MultipartParseError as exc:
        raise HTTPException(400, f"malformed multipart body ({exc})") from None
    finally:
        out.close()
    if not state["found"]:
        raise HTTPException(400, "multipart body has no field named 'file'")
    if state["size"] == 0:
        raise HTTPException(400, f"{state['name'] or 'file'}: empty upload (0 bytes)")
    return state["name"], state["size"]


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_name(name: str) -> str:
    """The client's file name must be a plain name: no folders, no control characters."""
    if not name:
        raise HTTPException(400, "the upload has no file name")
    if "/" in name or "\\" in name or name in (".", "..") or _CONTROL.search(name):
        raise HTTPException(400, f"file name {name!r} must be a plain name, without folders or control characters")
    if len(name) > 255:
        raise HTTPException(400, "file name is longer than 255 characters")
    return name


def _media_problem(path: Path) -> Optional[str]:
    """None for a video or image file; otherwise why not (checked by content, not by name)."""
    from gameqa.media import media_kind

    try:
        media_kind(path)
    except GameQAError as exc:
        return f"not a video or image file ({exc.problem})"
    return None


# -- middleware ---------------------------------------------------------------------------------------
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
_DEFAULT_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


class _MetricsAndHeaders:
    """Counts requests and their latency by route template; adds security headers to every reply."""

    def __init__(self, app, metrics: Metrics, routes):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _allowed(self, scope) -> list[str]:
        return _route_methods(self.routes(), scope)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [h for h in _SECURITY_HEADERS if h[0] not in names]
                if b"content-security-policy" not in names:
                    headers.append(_DEFAULT_CSP)
                if message["status"] == 405:  # name every method of the path, not just the first route's
                    headers = [h for h in headers if h[0].lower() != b"allow"]
                    headers.append((b"allow", ", ".join(self._allowed(scope)).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.inc(scope["method"], template, str(status["code"]))
            self.metrics.request_seconds.observe(time.perf_counter() - start, template)


def _route_methods(routes, scope) -> list[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches({**scope, "method": "GET"}) if hasattr(route, "matches") else (Match.NONE, None)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def parse_api_keys(values: list[str]) -> dict[str, str]:
    """``KEY`` or ``NAME:KEY`` strings -> {key: client name}; a bare key is named by its hash."""
    keys = {}
    for value in values:
        value = value.strip()
        if not value or value.startswith("#"):
            continue
        name, sep, key = value.partition(":")
        if not sep:
            name, key = "key-" + hashlib.sha256(value.encode()).hexdigest()[:8], value
        if len(key) < 8:
            raise GameQAError(None, f"API key for {name!r} is shorter than 8 characters")
        keys[key] = name
    return keys
