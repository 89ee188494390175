"""Where the scoring service keeps its jobs: SQLite in the data folder by default, any SQLAlchemy URL
(``postgresql+psycopg://...``) when given. Finished results survive a restart; so do the thumbnails of
each job's worst frames, kept as PNG bytes so a database server alone holds everything.

On PostgreSQL, services opening a new database at once take an advisory lock so that one of them creates
the tables; text is stored without NUL characters (PostgreSQL refuses them). A database that cannot be
opened is a ``ConfigError`` of one line naming the URL with its password hidden."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from sqlalchemy import (BigInteger, Boolean, Column, Float, Integer, LargeBinary, MetaData, String, Table, Text,
                        create_engine, delete, event, func, insert, select, text, update)
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from gameqa.errors import ConfigError
from gameqa.dburl import shown_url, with_installed_driver

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ENDED = (DONE, FAILED, CANCELLED)
# PostgreSQL advisory-lock key serialising the creation of the tables by services starting at once
_INIT_LOCK_KEY = 0x67616D65_7376  # "gamesv"

_meta = MetaData()
jobs_table = Table(
    "jobs", _meta,
    Column("id", String(32), primary_key=True),
    Column("owner", Text, nullable=False, index=True),   # the API key's client name
    Column("status", String(16), nullable=False, index=True),
    Column("source", String(16), nullable=False),        # "upload" or "storage"
    Column("filename", Text, nullable=False),            # the client's name (or storage path), display only
    Column("media_path", Text, nullable=False),          # where the server reads it
    Column("keep_file", Boolean, nullable=False, default=False),
    Column("model", String(255), nullable=False),
    Column("sample", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False, default=0),  # storage files may pass 2 GiB
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("error", Text),
    Column("result_json", Text),
)
frames_table = Table(
    "frames", _meta,
    Column("job_id", String(32), primary_key=True),
    Column("frame_index", Integer, primary_key=True),
    Column("png", LargeBinary, nullable=False),
)


@dataclass
class Job:
    """One scoring job as stored."""

    id: str
    owner: str
    status: str
    source: str
    filename: str
    media_path: str
    keep_file: bool
    model: str
    sample: str
    size_bytes: int
    created_at: float
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    error: Optional[str] = None
    result: Optional[dict] = None
    frame_thumbs: list[int] = field(default_factory=list)


class JobStore:
    """Thread-safe job table on one SQLAlchemy engine."""

    def __init__(self, url: str):
        self.url = shown_url(url)  # for messages: the password hidden
        is_sqlite = url.startswith("sqlite")
        kwargs = {"connect_args": {"check_same_thread": False, "timeout": 30}} if is_sqlite else {"pool_pre_ping": True}
        try:
            self.engine = create_engine(url if is_sqlite else with_installed_driver(url), **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as err:
            raise ConfigError(self.url, f"cannot open the job database ({_one_line(err)})") from None
        if is_sqlite:
            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _record):  # WAL: readers do not wait for the writing worker
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()
        self._write_lock = threading.Lock() if is_sqlite else _NoLock()
        try:
            with self.engine.begin() as conn:  # one transaction: the lock holds until the tables exist
                if self.engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INIT_LOCK_KEY})
                _meta.create_all(conn)
        except DBAPIError as err:
            self.engine.dispose()
            raise ConfigError(self.url, f"cannot open the job database ({_one_line(err.orig)})") from None

    def close(self) -> None:
        self.engine.dispose()

    def add(self, job: Job) -> None:
        row = {k: _no_nul(getattr(job, k)) for k in jobs_table.c.keys() if k != "result_json"}
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(insert(jobs_table).values(**row))

    def get(self, job_id: str) -> Optional[Job]:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).mappings().first()
            if row is None:
                return None
            thumbs = conn.execute(select(frames_table.c.frame_index).where(frames_table.c.job_id == job_id)
                                  .order_by(frames_table.c.frame_index)).scalars().all()
        return _job_of(row, list(thumbs))

    def list(self, owner: Optional[str] = None, status: Optional[str] = None, limit: int = 50,
             offset: int = 0) -> list[Job]:
        query = select(jobs_table).order_by(jobs_table.c.created_at.desc()).limit(limit).offset(offset)
        if owner is not None:
            query = query.where(jobs_table.c.owner == owner)
        if status is not None:
            query = query.where(jobs_table.c.status == status)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
            thumbs: dict[str, list[int]] = {}
            if rows:  # the listed jobs' kept thumbnails, in one query (the list links them as a job's page does)
                kept = conn.execute(select(frames_table.c.job_id, frames_table.c.frame_index)
                                    .where(frames_table.c.job_id.in_([r["id"] for r in rows]))
                                    .order_by(frames_table.c.frame_index))
                for job_id, index in kept:
                    thumbs.setdefault(job_id, []).append(index)
        return [_job_of(r, thumbs.get(r["id"])) for r in rows]

    def ids_with_status(self, *statuses: str) -> list[str]:
        """Job ids in these states, oldest first (to re-queue them in order after a restart)."""
        query = select(jobs_table.c.id).where(jobs_table.c.status.in_(statuses)).order_by(jobs_table.c.created_at)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars().all())

    def count_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs_table.c.status, func.count()).group_by(jobs_table.c.status)).all()
        return {status: n for status, n in rows}

    def mark_running(self, job_id: str) -> bool:
        """Queued -> running; False when the job was cancelled (or is gone) meanwhile."""
        with self._write_lock, self.engine.begin() as conn:
            done = conn.execute(update(jobs_table).where(jobs_table.c.id == job_id, jobs_table.c.status == QUEUED)
                                .values(status=RUNNING, started_at=time.time()))
            return done.rowcount == 1

    def finish(self, job_id: str, result: dict, thumbs: dict[int, bytes]) -> None:
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(delete(frames_table).where(frames_table.c.job_id == job_id))
            if thumbs:
                conn.execute(insert(frames_table), [{"job_id": job_id, "frame_index": i, "png": png}
                                                    for i, png in sorted(thumbs.items())])
            conn.execute(update(jobs_table).where(jobs_table.c.id == job_id).values(
                status=DONE, finished_at=time.time(), result_json=json.dumps(result), error=None))

    def fail(self, job_id: str, error: str, status: str = FAILED, only_if: tuple[str, ...] = (QUEUED, RUNNING)) -> bool:
        """Mark a job failed (or cancelled) unless it already ended; True when it changed."""
        with self._write_lock, self.engine.begin() as conn:
            done = conn.execute(update(jobs_table).where(jobs_table.c.id == job_id, jobs_table.c.status.in_(only_if))
                                .values(status=status, finished_at=time.time(), error=_no_nul(error)))
            return done.rowcount == 1

    def requeue(self, job_id: str) -> None:
        with self._write_lock, self.engine.begin() as conn:
            conn.execute(update(jobs_table).where(jobs_table.c.id == job_id).values(status=QUEUED, started_at=None))

    def thumb(self, job_id: str, frame_index: int) -> Optional[bytes]:
        with self.engine.connect() as conn:
            return conn.execute(select(frames_table.c.png).where(frames_table.c.job_id == job_id,
                                                                 frames_table.c.frame_index == frame_index)).scalar()


def _no_nul(value):
    """Strings without NUL characters (PostgreSQL text cannot hold them); other values as they are.
    JSON written by ``json.dumps`` needs none of this: it escapes NUL as ``\\u0000``."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _one_line(err) -> str:
    return " ".join(str(err).split())


def _job_of(row, thumbs: Optional[list[int]] = None) -> Job:
    data = dict(row)
    result_text = data.pop("result_json")
    return Job(**data, result=None if result_text is None else json.loads(result_text), frame_thumbs=thumbs or [])


class _NoLock:
    """Server databases handle concurrent writers themselves."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
