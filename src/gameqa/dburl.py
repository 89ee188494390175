"""Database URLs shared by the study store and the job store (SQLAlchemy)."""
from __future__ import annotations

import importlib.util

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def shown_url(url: str) -> str:
    """``url`` as shown in messages: its password replaced by ``***`` (SQLite URLs as given)."""
    if url.startswith("sqlite"):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "the database URL"  # unparsable: it may hold a password, so it is not echoed


def with_installed_driver(url: str) -> str:
    """A plain ``postgresql://`` URL names psycopg 3 when only that driver is installed
    (SQLAlchemy 2.0 would otherwise look for psycopg2)."""
    parsed = make_url(url)
    if (parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is None
            and importlib.util.find_spec("psycopg") is not None):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url
