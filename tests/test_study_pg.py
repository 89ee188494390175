"""The study store and app on a real PostgreSQL server (a throwaway cluster from tests/pg.py):
the participant flow with export, refused votes, participants and writers at once, a
SIGKILLed app server, and databases that belong to another study or cannot be reached."""
from __future__ import annotations

import threading

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
sqlalchemy = pytest.importorskip("sqlalchemy")
pytest.importorskip("uvicorn")
from pg import pg_server, pg_url  # noqa: E402,F401 - fixtures
from study_checks import (ThreadServer, all_votes, check_bad_votes_are_refused,  # noqa: E402,F401 - study_file: a fixture
                          check_database_of_another_study_is_refused, study_file,
                          check_full_session_export_and_analyze,
                          check_votes_survive_a_killed_server, join_and_consent, vote)

from gameqa.bench.study_load import StudyServer, make_image_study, run_study_load  # noqa: E402
from gameqa.errors import ConfigError  # noqa: E402
from gameqa.subjective.app import create_app  # noqa: E402
from gameqa.subjective.store import StudyStore  # noqa: E402
from gameqa.subjective.study import load_study  # noqa: E402


@pytest.fixture()
def live_pg(study_file, pg_url):
    """httpx client of the app running in this process on a fresh PostgreSQL database."""
    app = create_app(load_study(study_file), pg_url)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def _table_rows(url: str, table: str) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}")).scalar()
    finally:
        engine.dispose()


def test_postgres_is_really_used(pg_url, study_file):
    store = StudyStore(load_study(study_file), pg_url)
    try:
        assert store.engine.dialect.name == "postgresql" and not store.is_sqlite
        token = store.create_participant("pytest")
        store.give_consent(token, {"display": "TV"})
        item = store.state(token)["item"]
        store.record_vote(token, item["position"], item["nonce"], 4)
    finally:
        store.close()
    # read back with a separate connection: the rows are in PostgreSQL's tables
    assert _table_rows(pg_url, "participants") == 1 and _table_rows(pg_url, "votes") == 1
    assert _table_rows(pg_url, "items") == 6


def test_full_session_export_and_analyze(tmp_path, pg_url):
    study_file = make_image_study(tmp_path / "full", contents=3, levels=2, items=6, repeats=1)
    check_full_session_export_and_analyze(study_file, pg_url, tmp_path)


def test_bad_votes_are_refused_and_nothing_is_stored(live_pg):
    check_bad_votes_are_refused(live_pg)


def test_database_of_another_study_is_refused(tmp_path, study_file, pg_url, pg_server):
    check_database_of_another_study_is_refused(study_file, pg_url, tmp_path)
    # a database that does not exist, a server that is not there: one-line errors
    missing = pg_server.url("no_such_database")
    with pytest.raises(ConfigError, match="cannot open the database") as caught:
        StudyStore(load_study(study_file), missing)
    assert "no_such_database" in str(caught.value) and "\n" not in str(caught.value)
    nobody = f"postgresql+psycopg://gameqa:s3cret-pw@/x?host={tmp_path}&port=1"
    with pytest.raises(ConfigError, match="cannot open the database") as caught:
        StudyStore(load_study(study_file), nobody)
    assert "s3cret-pw" not in str(caught.value)  # the password never reaches a message
    with pytest.raises(ConfigError, match="cannot open the database"):
        StudyStore(load_study(study_file), pg_url.replace("+psycopg", "+nosuchdriver"))


def test_plain_postgresql_url_uses_the_installed_driver(study_file, pg_url):
    """``postgresql://`` (no driver named) works with psycopg 3 even without psycopg2."""
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    store = StudyStore(load_study(study_file), plain)
    try:
        assert store.create_participant()
    finally:
        store.close()


def test_long_content_names_are_stored(tmp_path, pg_url):
    """PostgreSQL enforces VARCHAR lengths (SQLite does not): a long content name must fit."""
    study_file = make_image_study(tmp_path / "s", contents=2, levels=2, items=3, repeats=0)
    content = "a-very-long-source-content-name-" * 12
    study_file.write_text(study_file.read_text().replace('content = "c0"', f'content = "{content}"'))
    store = StudyStore(load_study(study_file), pg_url)
    try:
        token = store.create_participant()
        store.give_consent(token, {"display": "TV"})
        state = store.state(token)
        while state["stage"] == "rate":
            state = store.record_vote(token, state["item"]["position"], state["item"]["nonce"], 3)
        assert content in {row["content"] for row in store.votes()}
    finally:
        store.close()


def test_votes_survive_a_killed_server_and_sessions_resume(tmp_path, study_file, pg_url):
    """SIGKILL of the app server (not of PostgreSQL) while participants vote: every vote
    answered 200 is there after the restart, and each session resumes."""
    check_votes_survive_a_killed_server(study_file, pg_url, tmp_path)


def test_twenty_participants_at_once(tmp_path, pg_url):
    study_file = make_image_study(tmp_path / "study", items=4, repeats=1)
    with StudyServer(study_file, pg_url, log_file=tmp_path / "server.log") as server:
        report = run_study_load(participants=20, timeout_s=60, base_url=server.base_url)
    assert report["errors"] == []
    assert report["votes_accepted"] == 20 * 6 == report["votes_exported"]
    assert _table_rows(pg_url, "votes") == 120 and _table_rows(pg_url, "participants") == 20


def test_the_same_vote_sent_at_once_is_stored_once(live_pg):
    """12 copies of one vote race each other: one is taken, the others are refused."""
    client = live_pg
    token, state = join_and_consent(client)
    item, barrier = state["item"], threading.Barrier(12)
    codes: list[int] = []

    def send(score):
        with httpx.Client(base_url=str(client.base_url), timeout=20) as own:
            barrier.wait(timeout=10)
            codes.append(vote(own, token, item, score).status_code)

    threads = [threading.Thread(target=send, args=(1 + k % 5,)) for k in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(codes) == [200] + [409] * 11
    [stored] = all_votes(client)
    assert stored["position"] == str(item["position"])
    assert client.get(f"/api/p/{token}/state").json()["position"] == 1


def test_stores_opened_at_once_on_a_new_database(study_file, pg_url):
    """Several processes starting on an empty database (serve + links, or workers) all get
    the tables and the study's fingerprint, without errors."""
    study = load_study(study_file)
    barrier, errors, stores = threading.Barrier(8), [], []

    def open_store():
        try:
            barrier.wait(timeout=10)
            stores.append(StudyStore(study, pg_url))
        except Exception as exc:  # noqa: BLE001 - collected and shown by the assert
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for store in stores:
        store.close()
    assert errors == [] and len(stores) == 8
    assert _table_rows(pg_url, "meta") == 1
