"""Where a study's participants, their item orders and their votes live (SQLAlchemy Core).

SQLite by default, in WAL mode with ``synchronous=FULL``: each vote is committed in its own
transaction before the reply goes out, so a vote that got a 200 survives a killed server,
and a participant's session (its order, the nonce of the item on screen, the votes given)
resumes after a browser reload or a server restart. Write transactions on SQLite start with
``BEGIN IMMEDIATE`` so that concurrent writers queue instead of failing.

A ``postgresql://`` URL works too, with psycopg 3 (``postgresql+psycopg://``, also picked for a
plain ``postgresql://`` when psycopg2 is absent) or another installed driver. There, writes to
one participant queue on a ``SELECT ... FOR UPDATE`` of its row, and stores opening a new
database at once take an advisory lock so that one of them creates the tables. Messages show
the URL with its password hidden.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (Boolean, Column, Float, Integer, MetaData, String, Table, Text,
                        UniqueConstraint, create_engine, event, func, insert, inspect, select, text, update)
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from gameqa.errors import ConfigError
from gameqa.subjective.study import Study, plan_session
from gameqa.dburl import shown_url, with_installed_driver

__all__ = ["StudyStore", "Rejected", "default_db_url"]

_metadata = MetaData()

# what secrets.token_urlsafe makes: anything else (NUL bytes included, which PostgreSQL
# cannot even compare) is an unknown link without asking the database
_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
# PostgreSQL advisory-lock key serialising the creation of the tables and the fingerprint
_INIT_LOCK_KEY = 0x67616D65_7161  # "gameqa"

meta_table = Table("meta", _metadata,
                   Column("key", String(64), primary_key=True),
                   Column("value", Text, nullable=False))

participants_table = Table(
    "participants", _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("consent_at", Float),
    Column("answers", Text),
    Column("completed_at", Float),
    Column("user_agent", String(512)),
)

items_table = Table(
    "items", _metadata,
    Column("participant_id", Integer, primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("phase", String(16), nullable=False),
    Column("stimulus_id", String(128), nullable=False),
    Column("content", Text, nullable=False),
    Column("repeat", Boolean, nullable=False),
    Column("nonce", String(64)),
    Column("issued_at", Float),
    UniqueConstraint("nonce", name="uq_items_nonce"),
)

votes_table = Table(
    "votes", _metadata,
    Column("participant_id", Integer, primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("stimulus_id", String(128), nullable=False),
    Column("content", Text, nullable=False),
    Column("phase", String(16), nullable=False),
    Column("repeat", Boolean, nullable=False),
    Column("score", Integer, nullable=False),
    Column("issued_at", Float),
    Column("voted_at", Float, nullable=False),
)


class Rejected(Exception):
    """A request the store refuses; ``status`` is the HTTP status the app answers with and
    ``str(err)`` the message shown to the participant. Nothing was stored."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


def default_db_url(study: Study) -> str:
    """``sqlite:///<study folder of the TOML>/<study name>.sqlite``."""
    folder = study.source.parent if study.source else study.folder
    return f"sqlite:///{folder / (study.name + '.sqlite')}"


def observer_name(participant_id: int) -> str:
    """The public observer id of a participant (never the secret link token)."""
    return f"P{participant_id:04d}"


class StudyStore:
    """The votes database of one study. Thread-safe: each call uses its own connection."""

    def __init__(self, study: Study, url: str | None = None, create: bool = True):
        """Open (``create``: or make) the study's database; ``create=False`` (export) refuses one that does
        not exist yet, so a mistyped --db is an error instead of an empty new database."""
        self.study = study
        raw_url = url or default_db_url(study)
        self.url = shown_url(raw_url)  # for messages: the password hidden
        self.is_sqlite = raw_url.startswith("sqlite")
        try:
            if self.is_sqlite:
                if raw_url in ("sqlite://", "sqlite:///:memory:"):
                    raise ConfigError(self.url, "an in-memory database cannot keep votes; give a file")
                db_path = Path(raw_url.split("sqlite:///", 1)[-1])
                if db_path.parent and not db_path.parent.is_dir():
                    raise ConfigError(self.url, f"folder {db_path.parent} does not exist")
                if not create and not db_path.is_file():
                    raise ConfigError(self.url, "no such database file (the votes are in the file that "
                                                "`gameqa study serve` made; check --db)")
                self.engine = create_engine(raw_url, connect_args={"check_same_thread": False,
                                                                   "timeout": 30})
                event.listen(self.engine, "connect", _sqlite_on_connect)
                event.listen(self.engine, "begin", _sqlite_on_begin)
            else:
                self.engine = create_engine(with_installed_driver(raw_url), pool_pre_ping=True)
        except (ArgumentError, NoSuchModuleError, ModuleNotFoundError, ImportError) as err:
            raise ConfigError(self.url, f"cannot open the database ({err})") from None
        self.is_postgresql = self.engine.dialect.name == "postgresql"
        try:
            with self._write() as conn:
                if self.is_postgresql:  # one store at a time creates the tables and fingerprint
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INIT_LOCK_KEY})
                if not create and not inspect(conn).has_table(meta_table.name):
                    raise ConfigError(self.url, "holds no study (no gameqa tables); check --db")
                _metadata.create_all(conn)
                self._check_fingerprint(conn)
                self._check_assigned(conn)
        except DBAPIError as err:
            self.engine.dispose()
            problem = " ".join(str(err.orig).split())  # one line
            raise ConfigError(self.url, f"cannot open the database ({problem})") from None
        except ConfigError:
            self.engine.dispose()
            raise

    # --- transactions ---------------------------------------------------------------

    @contextmanager
    def _write(self):
        with self.engine.connect().execution_options(gameqa_write=True) as conn:
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self):
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def _check_fingerprint(self, conn) -> None:
        fingerprint = self.study.fingerprint()
        stored = conn.execute(select(meta_table.c.value)
                              .where(meta_table.c.key == "fingerprint")).scalar()
        if stored is None:
            conn.execute(insert(meta_table).values(key="fingerprint", value=fingerprint))
        elif stored != fingerprint:
            raise ConfigError(self.url, "this database holds another study (or the study's "
                                        "name, method or stimuli changed); use a new --db")

    def _check_assigned(self, conn) -> None:
        """Every stimulus already given to a participant must still be in the study (training stimuli are not
        in the fingerprint, so a study file edited between runs is caught here, not by a participant)."""
        assigned = conn.execute(select(items_table.c.stimulus_id).distinct()).scalars()
        gone = sorted(set(assigned) - set(self.study.by_id))
        if gone:
            raise ConfigError(self.url, f"participants were given stimuli the study no longer lists "
                                        f"({', '.join(gone[:5])}{', ...' if len(gone) > 5 else ''}); "
                                        "put them back in the study file, or use a new --db")

    def close(self) -> None:
        self.engine.dispose()

    # --- participants -----------------------------------------------------------------

    def _assigned_counts(self, conn) -> dict[str, int]:
        rows = conn.execute(select(items_table.c.stimulus_id, func.count())
                            .where(items_table.c.phase == "main", items_table.c.repeat.is_(False))
                            .group_by(items_table.c.stimulus_id))
        return {stimulus: count for stimulus, count in rows}

    def _vote_counts(self, conn) -> dict[str, int]:
        rows = conn.execute(select(votes_table.c.stimulus_id, func.count())
                            .where(votes_table.c.phase == "main", votes_table.c.repeat.is_(False))
                            .group_by(votes_table.c.stimulus_id))
        return {stimulus: count for stimulus, count in rows}

    def create_participant(self, user_agent: str | None = None) -> str:
        """A new participant with its planned items; returns its secret link token."""
        token = secrets.token_urlsafe(24)
        with self._write() as conn:
            votes = self._vote_counts(conn)
            if all(votes.get(s.id, 0) >= self.study.ratings_per_stimulus for s in self.study.stimuli):
                raise Rejected(409, "This study has all the ratings it needs. Thank you for your interest.")
            plan = plan_session(self.study, self._assigned_counts(conn))
            participant_id = conn.execute(insert(participants_table).values(
                token=token, created_at=time.time(),
                user_agent=(user_agent or "")[:512])).inserted_primary_key[0]
            conn.execute(insert(items_table), [
                {"participant_id": participant_id, "position": position, "phase": item.phase,
                 "stimulus_id": item.stimulus_id, "content": item.content, "repeat": item.repeat}
                for position, item in enumerate(plan)])
        return token

    def _participant(self, conn, token: str, lock: bool = False):
        if not isinstance(token, str) or not _TOKEN_PATTERN.fullmatch(token):
            raise Rejected(404, "Unknown participant link.")
        query = select(participants_table).where(participants_table.c.token == token)
        if lock and not self.is_sqlite:
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            raise Rejected(404, "Unknown participant link.")
        return row

    def _counts(self, conn, participant_id: int) -> tuple[int, int, int, int]:
        """(items, votes, training items, training votes) of one participant."""
        items = conn.execute(select(items_table.c.phase, func.count())
                             .where(items_table.c.participant_id == participant_id)
                             .group_by(items_table.c.phase)).all()
        votes = conn.execute(select(votes_table.c.phase, func.count())
                             .where(votes_table.c.participant_id == participant_id)
                             .group_by(votes_table.c.phase)).all()
        items_by, votes_by = dict(items), dict(votes)
        return (sum(items_by.values()), sum(votes_by.values()), items_by.get("training", 0),
                votes_by.get("training", 0))

    def give_consent(self, token: str, answers: dict[str, str]) -> None:
        """Record consent and the viewing-condition answers (validated against the study)."""
        clean = {}
        for question in self.study.questions:
            value = answers.get(question.id) if isinstance(answers, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise Rejected(400, f"Please answer: {question.text}")
            value = value.strip()[:500]
            if question.choices and value not in question.choices:
                raise Rejected(400, f"{value!r} is not a choice for: {question.text}")
            clean[question.id] = value
        with self._write() as conn:
            row = self._participant(conn, token, lock=True)
            if row["completed_at"] is not None:
                raise Rejected(409, "This link was already used to complete the study.")
            if row["consent_at"] is not None:
                return  # a reload that sends the form twice: keep the first answers
            conn.execute(update(participants_table).where(participants_table.c.id == row["id"])
                         .values(consent_at=time.time(), answers=json.dumps(clean)))

    def state(self, token: str) -> dict:
        """Where a participant stands: ``stage`` is consent, rate or done; while rating,
        ``item`` is the item on screen with its nonce (issued here once, kept until voted)."""
        with self._write() as conn:
            row = self._participant(conn, token, lock=True)
            total, voted, training_total, training_voted = self._counts(conn, row["id"])
            state = {"stage": "consent", "position": voted, "total": total,
                     "training_total": training_total, "training_done": training_voted,
                     "item": None}
            if row["completed_at"] is not None or voted >= total:
                state["stage"] = "done"
                return state
            if row["consent_at"] is None:
                return state
            item = conn.execute(select(items_table).where(
                items_table.c.participant_id == row["id"],
                items_table.c.position == voted)).mappings().one()
            nonce = item["nonce"]
            if nonce is None:
                nonce = secrets.token_urlsafe(24)
                conn.execute(update(items_table).where(
                    items_table.c.participant_id == row["id"],
                    items_table.c.position == voted).values(nonce=nonce, issued_at=time.time()))
            stimulus = self.study.by_id[item["stimulus_id"]]
            state["stage"] = "rate"
            state["item"] = {"position": voted, "phase": item["phase"], "kind": stimulus.kind,
                             "nonce": nonce}
            return state

    def media_path(self, token: str, position: int) -> Path:
        """The file of the participant's item on screen; any other position is refused."""
        with self._read() as conn:
            row = self._participant(conn, token)
            if row["consent_at"] is None or row["completed_at"] is not None:
                raise Rejected(404, "No such item.")
            _, voted, _, _ = self._counts(conn, row["id"])
            if position != voted:
                raise Rejected(404, "No such item.")
            item = conn.execute(select(items_table.c.stimulus_id).where(
                items_table.c.participant_id == row["id"],
                items_table.c.position == position)).first()
        if item is None:
            raise Rejected(404, "No such item.")
        return self.study.by_id[item[0]].path

    def record_vote(self, token: str, position: int, nonce: str, score) -> dict:
        """Store one vote and return the participant's next state. Refused (nothing stored):
        an unknown link, a completed session, an unknown or past item, a nonce other than the
        one issued for the item on screen, a score off the scale."""
        method = self.study.method
        if isinstance(score, bool) or not isinstance(score, int) or not method.low <= score <= method.high:
            raise Rejected(422, f"A rating must be a whole number from {method.low} to {method.high}.")
        if not isinstance(position, int) or isinstance(position, bool) or not 0 <= position < 2**31:
            # (past a 32-bit column's range no item can be there: refused before the database sees it)
            raise Rejected(404, "Unknown item.")
        with self._write() as conn:
            row = self._participant(conn, token, lock=True)
            if row["completed_at"] is not None:
                raise Rejected(409, "This link was already used to complete the study; "
                                    "no more votes are taken.")
            if row["consent_at"] is None:
                raise Rejected(409, "Please give your consent first.")
            item = conn.execute(select(items_table).where(
                items_table.c.participant_id == row["id"],
                items_table.c.position == position)).mappings().first()
            if item is None:
                raise Rejected(404, "Unknown item.")
            already = conn.execute(select(votes_table.c.score).where(
                votes_table.c.participant_id == row["id"],
                votes_table.c.position == position)).first()
            if already is not None:
                raise Rejected(409, "This item was already rated; the repeated vote was ignored.")
            if item["nonce"] is None or not isinstance(nonce, str) \
                    or not secrets.compare_digest(item["nonce"].encode(), nonce.encode()):
                raise Rejected(403, "This vote does not match the item on screen (stale or "
                                    "forged); reload the page.")
            now = time.time()
            conn.execute(insert(votes_table).values(
                participant_id=row["id"], position=position, stimulus_id=item["stimulus_id"],
                content=item["content"], phase=item["phase"], repeat=item["repeat"], score=score,
                issued_at=item["issued_at"], voted_at=now))
            conn.execute(update(items_table).where(
                items_table.c.participant_id == row["id"],
                items_table.c.position == position).values(nonce=None))
            total, voted, _, _ = self._counts(conn, row["id"])
            if voted >= total:
                conn.execute(update(participants_table).where(participants_table.c.id == row["id"])
                             .values(completed_at=now))
        return self.state(token)

    # --- experimenter -----------------------------------------------------------------

    def votes(self, include_all: bool = False) -> list[dict]:
        """Votes in voting order. By default only the main phase's first presentations, as
        rows stimulus, observer, score, content (what ``read_votes_csv`` reads); with
        ``include_all`` also training votes and repeats, with phase, repeat, position,
        issued_at and voted_at."""
        query = select(votes_table).order_by(votes_table.c.voted_at, votes_table.c.participant_id,
                                             votes_table.c.position)
        if not include_all:
            query = query.where(votes_table.c.phase == "main", votes_table.c.repeat.is_(False))
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        result = []
        for row in rows:
            out = {"stimulus": row["stimulus_id"], "observer": observer_name(row["participant_id"]),
                   "score": row["score"], "content": row["content"]}
            if include_all:
                out.update(phase=row["phase"], repeat=int(bool(row["repeat"])),
                           position=row["position"], issued_at=row["issued_at"],
                           voted_at=row["voted_at"])
            result.append(out)
        return result

    def progress(self) -> dict:
        """Counts for the experimenter: participants by stage, votes per stimulus against the
        target, and per participant the votes given and the mean absolute difference
        between the two votes on each repeated stimulus."""
        with self._read() as conn:
            people = conn.execute(select(participants_table)
                                  .order_by(participants_table.c.id)).mappings().all()
            item_totals = dict(conn.execute(select(items_table.c.participant_id, func.count())
                                            .group_by(items_table.c.participant_id)).all())
            vote_rows = conn.execute(select(votes_table.c.participant_id, votes_table.c.stimulus_id,
                                            votes_table.c.phase, votes_table.c.score)).all()
            counts = self._vote_counts(conn)
        votes_by = defaultdict(list)
        for participant_id, stimulus_id, phase, score in vote_rows:
            votes_by[participant_id].append((stimulus_id, phase, score))
        participants = []
        for person in people:
            given = votes_by.get(person["id"], [])
            main_votes = defaultdict(list)
            for stimulus_id, phase, score in given:
                if phase == "main":
                    main_votes[stimulus_id].append(score)
            pairs = [abs(v[0] - v[1]) for v in main_votes.values() if len(v) == 2]
            stage = ("done" if person["completed_at"] is not None else
                     "rating" if person["consent_at"] is not None else "consent")
            participants.append({
                "observer": observer_name(person["id"]), "stage": stage,
                "link_token": person["token"] if stage != "done" else None,
                "votes": len(given), "items": item_totals.get(person["id"], 0),
                "repeat_pairs": len(pairs),
                "repeat_mean_abs_diff": (sum(pairs) / len(pairs)) if pairs else None,
                "answers": json.loads(person["answers"]) if person["answers"] else {},
                "created_at": person["created_at"], "completed_at": person["completed_at"]})
        stimuli = [{"stimulus": s.id, "content": s.content, "votes": counts.get(s.id, 0),
                    "target": self.study.ratings_per_stimulus} for s in self.study.stimuli]
        return {"study": self.study.name, "participants_total": len(participants),
                "participants_done": sum(p["stage"] == "done" for p in participants),
                "votes_total": sum(s["votes"] for s in stimuli),
                "votes_target": self.study.ratings_per_stimulus * len(stimuli),
                "full": all(s["votes"] >= s["target"] for s in stimuli),
                "stimuli": stimuli, "participants": participants}


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's begin event emits BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("gameqa_write")
                         else "BEGIN")
