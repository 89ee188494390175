"""The study web app: participants give consent, train and rate; the experimenter watches
progress and exports votes.

Participant pages live under ``/p/<token>`` where the token is an unguessable per-participant
secret; every API call of theirs names it, and none returns anything about other participants
or the results. Stimulus files are served only as "the item on screen" of a participant
(``/api/p/<token>/media/<position>``): the URL names no file, so no path reaches the disk
and the condition of a clip cannot be read from it. Each item carries a server-issued nonce;
a vote must bring it back, which refuses replayed and forged votes. Experimenter endpoints
need ``Authorization: Bearer <experimenter token>``.
"""
from __future__ import annotations

import html
import secrets
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gameqa.csvio import csv_text
from gameqa.subjective.store import Rejected, StudyStore
from gameqa.subjective.study import Study

__all__ = ["create_app", "STATIC_DIR"]

STATIC_DIR = Path(str(resources.files("gameqa.subjective") / "static"))

_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self'; media-src 'self'; connect-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class ConsentBody(BaseModel):
    consent: bool
    answers: dict[str, Any] = Field(default_factory=dict)


class VoteBody(BaseModel):
    position: Any = None
    nonce: Any = None
    score: Any = None


class LinksBody(BaseModel):
    count: int = Field(1, ge=1, le=1000)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((STATIC_DIR / name).read_text(encoding="utf-8"))


def _message_page(message: str) -> str:
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Quality study'
            '</title><link rel="stylesheet" href="/static/study.css"></head><body><main>'
            f'<h1>Quality study</h1><p>{html.escape(message)}</p></main></body></html>')


def _public_study(study: Study) -> dict:
    method = study.method
    return {"title": study.title, "consent": study.consent, "instructions": study.instructions,
            "scale": {"low": method.low, "high": method.high,
                      "labels": {str(k): v for k, v in method.labels.items()},
                      "name": method.name},
            "questions": [{"id": q.id, "text": q.text, "choices": list(q.choices)}
                          for q in study.questions],
            "image_seconds": study.image_seconds}


def create_app(study: Study, db_url: str | None = None,
               experimenter_token: str | None = None) -> FastAPI:
    """The FastAPI app of ``study`` with its votes in ``db_url`` (default: SQLite next to the
    study file). The experimenter token is ``experimenter_token``, else the study's, else a
    random one; it is kept in ``app.state.experimenter_token``."""
    store = StudyStore(study, db_url)
    admin_token = experimenter_token or study.experimenter_token or secrets.token_urlsafe(24)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        store.close()

    app = FastAPI(title=f"gameqa study: {study.title}", docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    app.state.store = store
    app.state.study = study
    app.state.experimenter_token = admin_token
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    public_study = _public_study(study)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(Rejected)
    async def rejected(_request: Request, exc: Rejected):
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: "
                             f"{e.get('msg')}" for e in exc.errors())
        return _error(422, f"Invalid request ({problems}).")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    def require_admin(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(),
                                                                   admin_token.encode()):
            raise Rejected(401, "Experimenter token required (Authorization: Bearer <token>).")

    # --- pages ------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def index():
        return _page("join.html" if study.open_join else "closed.html")

    @app.get("/join", response_class=HTMLResponse)
    def join_page():
        return _page("join.html" if study.open_join else "closed.html")

    @app.get("/p/{token}", response_class=HTMLResponse)
    def participant_page(token: str):
        try:
            store.state(token)
        except Rejected as exc:
            return HTMLResponse(_message_page(exc.message), status_code=exc.status)
        return _page("participant.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page():
        return _page("admin.html")

    # --- participant API ----------------------------------------------------------------

    @app.get("/api/study")
    def study_info():
        return {"title": study.title, "open_join": study.open_join}

    @app.post("/api/join", status_code=201)
    def join(request: Request):
        if not study.open_join:
            raise Rejected(403, "This study takes participants by invitation link only.")
        token = store.create_participant(request.headers.get("user-agent"))
        return {"token": token, "url": f"/p/{token}"}

    @app.get("/api/p/{token}/state")
    def state(token: str):
        return {**store.state(token), "study": public_study}

    @app.post("/api/p/{token}/consent")
    def consent(token: str, body: ConsentBody):
        if not body.consent:
            raise Rejected(400, "You need to agree to take part before starting.")
        store.give_consent(token, body.answers)
        return {**store.state(token), "study": public_study}

    @app.post("/api/p/{token}/vote")
    def vote(token: str, body: VoteBody):
        return {**store.record_vote(token, body.position, body.nonce, body.score),
                "study": public_study}

    @app.get("/api/p/{token}/media/{position}")
    def media(token: str, position: int):
        path = store.media_path(token, position)
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    # --- experimenter API ---------------------------------------------------------------

    @app.get("/api/admin/progress")
    def progress(request: Request):
        require_admin(request)
        return store.progress()

    @app.get("/api/admin/votes.csv")
    def votes_csv(request: Request, all: bool = False):  # noqa: A002 - the query name
        require_admin(request)
        return Response(votes_to_csv(store.votes(include_all=all)), media_type="text/csv",
                        headers={"Content-Disposition":
                                 f'attachment; filename="{study.name}-votes'
                                 f'{"-all" if all else ""}.csv"'})

    @app.post("/api/admin/links", status_code=201)
    def links(request: Request, body: LinksBody):
        require_admin(request)
        tokens = [store.create_participant("invited") for _ in range(body.count)]
        return {"links": [f"/p/{t}" for t in tokens]}

    return app


def votes_to_csv(rows: list[dict]) -> str:
    """The rows of ``StudyStore.votes`` as CSV text (header from the first row's keys;
    stimulus, observer, score, content when there are none)."""
    return csv_text(list(rows[0]) if rows else ["stimulus", "observer", "score", "content"], rows)
