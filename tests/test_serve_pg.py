"""The scoring service on a real PostgreSQL server (a throwaway cluster from tests/pg.py): jobs scored
with the same results as on SQLite, thumbnails kept and served, restart, per-key isolation, metrics,
20 uploads at once over HTTP against a bounded queue, services creating the tables at once, text the
database would refuse, and one-line errors for databases that cannot be opened."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
sqlalchemy = pytest.importorskip("sqlalchemy")
pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402
from pg import pg_server, pg_url  # noqa: E402,F401 - fixtures
from serve_checks import (AUTH, check_clients_see_only_their_own_jobs, check_health_and_metrics,  # noqa: E402
                          check_queue_full_and_cancel, check_restart, check_storage_root,
                          check_upload_video_and_image, make_app, media, upload, wait_done)
from study_checks import ThreadServer  # noqa: E402

from gameqa.errors import ConfigError  # noqa: E402
from gameqa.serve.store import DONE, FAILED, QUEUED, Job, JobStore  # noqa: E402

__all__ = ["media", "pg_server", "pg_url"]  # fixtures


def _rows(url: str, query: str) -> list:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sqlalchemy.text(query)).all()]
    finally:
        engine.dispose()


def test_jobs_run_on_postgres_with_the_sqlite_results(tmp_path, media, pg_url):
    on_sqlite = check_upload_video_and_image(tmp_path / "sqlite", media)
    on_postgres = check_upload_video_and_image(tmp_path / "pg", media, pg_url)
    for sqlite_job, pg_job in zip(on_sqlite, on_postgres):
        pg_result, sqlite_result = dict(pg_job["result"]), dict(sqlite_job["result"])
        assert pg_result.pop("timing")["frames"] == sqlite_result.pop("timing")["frames"]  # seconds differ
        assert pg_result == sqlite_result  # every score, frame index and timestamp
        assert ([w["frame_index"] for w in pg_job["worst_frames"]]
                == [w["frame_index"] for w in sqlite_job["worst_frames"]])
    # the jobs and their thumbnails really are in PostgreSQL (bytea), and nothing is in the data folder
    assert sorted(_rows(pg_url, "SELECT status, count(*) FROM jobs GROUP BY status")) == [("done", 2)]
    (kind,) = _rows(pg_url, "SELECT data_type FROM information_schema.columns "
                            "WHERE table_name = 'frames' AND column_name = 'png'")[0]
    assert kind == "bytea"
    thumbs = _rows(pg_url, "SELECT job_id, frame_index, png FROM frames ORDER BY job_id, frame_index")
    assert len(thumbs) == 1 + min(3, len(on_postgres[0]["result"]["frame_indices"]))
    assert all(bytes(png).startswith(b"\x89PNG\r\n\x1a\n") for _, _, png in thumbs)
    assert not (tmp_path / "pg" / "data" / "jobs.sqlite3").exists()


def test_thumbnails_round_trip_as_bytes(tmp_path, media, pg_url):
    with TestClient(make_app(tmp_path, pg_url)) as client:
        store = client.app.state.store
        assert store.engine.dialect.name == "postgresql"
        job = wait_done(client, upload(client, media["clip"]).json()["id"])
        for worst in job["worst_frames"]:
            served = client.get(worst["thumbnail_url"], headers=AUTH)
            stored = store.thumb(job["id"], worst["frame_index"])
            assert type(stored) is bytes and served.content == stored  # every byte, NULs included
            assert b"\x00" in stored
        assert client.get(f"/v1/jobs/{job['id']}/frames/{2**31 - 1}", headers=AUTH).status_code == 404


def test_queue_bound_and_cancel_on_postgres(tmp_path, media, pg_url):
    check_queue_full_and_cancel(tmp_path, media, pg_url)
    assert sorted(_rows(pg_url, "SELECT status, count(*) FROM jobs GROUP BY status")) == [
        ("cancelled", 1), ("queued", 2)]


def test_restart_keeps_results_and_resumes_or_fails_on_postgres(tmp_path, media, pg_server, pg_url):
    check_restart(tmp_path, media, pg_url, fail_db_url=pg_server.create_database())


def test_clients_see_only_their_own_jobs_on_postgres(tmp_path, media, pg_url):
    check_clients_see_only_their_own_jobs(tmp_path, media, pg_url)


def test_metrics_on_postgres(tmp_path, media, pg_url):
    check_health_and_metrics(tmp_path, media, pg_url)


def test_storage_jobs_with_long_paths_on_postgres(tmp_path, media, pg_url):
    check_storage_root(tmp_path, media, pg_url)


def test_twenty_uploads_at_once_over_http(tmp_path, media, pg_url):
    """20 clients upload at the same moment to a queue of 4 under uvicorn: each gets 202 or 429, every
    202 ends done, the database holds exactly the accepted jobs, and no upload file is left."""
    app = make_app(tmp_path, pg_url, workers=2, max_queued=4)
    data = media["shot"].read_bytes()
    start = threading.Barrier(20)
    replies: list[tuple[int, str | None]] = []
    problems: list[str] = []

    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client:
        def one_client(n: int) -> None:
            try:
                start.wait(timeout=10)
                reply = client.post("/v1/jobs", files={"file": (f"shot{n}.png", data)})
                job_id = reply.json().get("id") if reply.status_code == 202 else None
                replies.append((reply.status_code, job_id))
                listed = client.get("/v1/jobs", params={"limit": 100})  # reads among the writes
                if listed.status_code != 200:
                    problems.append(f"list: {listed.status_code} {listed.text[:200]}")
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                problems.append(repr(exc))

        threads = [threading.Thread(target=one_client, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert problems == []
        statuses = [status for status, _ in replies]
        assert len(replies) == 20 and set(statuses) <= {202, 429}, statuses
        accepted = [job_id for status, job_id in replies if status == 202]
        assert accepted and statuses.count(429) > 0  # the bound held and some got through
        for job_id in accepted:
            job = client.get(f"/v1/jobs/{job_id}", params={"wait": 20}).json()
            assert job["status"] == "done", job
        metrics = client.get("/metrics").text
    assert f'gameqa_jobs_total{{status="done"}} {len(accepted)}' in metrics
    assert f'gameqa_jobs_rejected_total{{reason="queue_full"}} {statuses.count(429)}' in metrics
    stored = _rows(pg_url, "SELECT id, status FROM jobs")
    assert sorted(stored) == sorted((job_id, "done") for job_id in accepted)  # none lost, none extra
    assert list((tmp_path / "data" / "uploads").iterdir()) == []


def test_services_creating_the_tables_at_once(pg_url):
    """Six stores open one fresh database at the same moment: one creates the tables, all work."""
    start = threading.Barrier(6)
    stores, problems = [], []

    def open_store() -> None:
        try:
            start.wait(timeout=10)
            stores.append(JobStore(pg_url))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            problems.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert problems == [] and len(stores) == 6
        for n, store in enumerate(stores):
            store.add(Job(id=f"{n:032x}", owner="o", status=QUEUED, source="upload", filename="f.png",
                          media_path="/x/f.png", keep_file=False, model="niqe", sample="fps:2", size_bytes=1,
                          created_at=time.time()))
        assert len(stores[0].list(limit=100)) == 6
    finally:
        for store in stores:
            store.close()


def test_text_postgres_would_refuse_is_stored(pg_url):
    """Long owner names and file names, NUL characters, sizes over 2 GiB: SQLite takes them all, and
    PostgreSQL (VARCHAR lengths, no NUL in text, 32-bit INTEGER) must too."""
    store = JobStore(pg_url)
    try:
        job = Job(id="a" * 32, owner="team-" + "o" * 95, status=QUEUED, source="storage",
                  filename="dir/" * 80 + "odd\x00name.mp4", media_path="/storage/" + "dir/" * 80 + "odd.mp4",
                  keep_file=True, model="niqe", sample="fps:2", size_bytes=3 * 2**30, created_at=time.time())
        store.add(job)
        got = store.get(job.id)
        assert got.owner == job.owner and got.size_bytes == 3 * 2**30
        assert got.filename == job.filename.replace("\x00", "\ufffd")
        assert store.mark_running(job.id)
        assert store.fail(job.id, "decoder said: bad\x00byte")
        assert store.get(job.id).error == "decoder said: bad\ufffdbyte"
        assert store.get(job.id).status == FAILED
        other = Job(id="b" * 32, owner="x", status=QUEUED, source="upload", filename="r.png", media_path="/r.png",
                    keep_file=False, model="niqe", sample="fps:2", size_bytes=1, created_at=time.time())
        store.add(other)
        assert store.mark_running(other.id)
        store.finish(other.id, {"note": "a\x00b", "score": float("nan")}, {0: b"\x00\x01\x00"})
        finished = store.get(other.id)
        assert finished.status == DONE and finished.result["note"] == "a\x00b" and finished.frame_thumbs == [0]
        assert store.thumb(other.id, 0) == b"\x00\x01\x00"
        assert store.count_by_status() == {FAILED: 1, DONE: 1}
    finally:
        store.close()


def _unopenable_urls(pg_server) -> list[tuple[str, str]]:
    """(URL, words the message must hold); each URL carries the password ``s3cret-pw``."""
    socket_dir = pg_server.base
    return [
        ("postgresql+psycopg://gameqa:s3cret-pw@/jobs?host=/nonexistent-gameqa&port=5432", "No such file"),
        (f"postgresql+psycopg://postgres:s3cret-pw@/no_such_db?host={socket_dir}&port=5432", "does not exist"),
        (f"postgresql://postgres:s3cret-pw@/no_such_db?host={socket_dir}&port=5432", "does not exist"),
        ("postgresql+psycopg://gameqa:s3cret-pw@db.example:notaport/jobs", "cannot open the job database"),
        ("not a url s3cret-pw", "cannot open the job database"),
    ]


def test_unopenable_databases_are_one_line_errors(tmp_path, pg_server):
    for url, words in _unopenable_urls(pg_server):
        with pytest.raises(ConfigError) as caught:
            make_app(tmp_path, url)
        message = str(caught.value)
        assert words in message and "\n" not in message and "s3cret-pw" not in message, message
    assert list((tmp_path / "data" / "uploads").iterdir()) == []


def test_serve_command_reports_a_bad_database_in_one_line(tmp_path, pg_server):
    url = f"postgresql+psycopg://postgres:s3cret-pw@/no_such_db?host={pg_server.base}&port=5432"
    done = subprocess.run([sys.executable, "-m", "gameqa.serve.cli", "--data-dir", str(tmp_path / "data"),
                           "--db-url", url], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: postgresql+psycopg://postgres:***@/no_such_db") and "does not exist" in lines[0]
    assert "s3cret-pw" not in done.stderr + done.stdout and "Traceback" not in done.stderr
