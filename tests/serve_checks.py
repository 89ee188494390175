"""Helpers and checks of the scoring service shared by the SQLite tests (test_serve.py) and the
PostgreSQL tests (test_serve_pg.py): each check takes the job database URL (None: the default SQLite
file in the data folder), so one scenario runs on both."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import clipgen
from gameqa.models.registry import DEFAULT_MODEL
from gameqa.serve.app import ServeConfig, create_app

KEY, OTHER_KEY = "alice-key-123456", "bob-key-654321"
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def media(tmp_path_factory, need_ffmpeg) -> dict[str, Path]:
    """A 1 s 192x108 H.264 clip, a noisy 192x108 PNG and a text file named .mp4."""
    folder = tmp_path_factory.mktemp("serve-media")
    clip = clipgen.make_clip(folder / "clip.mp4", size=(192, 108), fps=10, seconds=1.0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:108, 0:192]
    img = np.clip((127 + 90 * np.sin(xx * 0.1))[..., None].repeat(3, 2) + rng.normal(0, 10, (108, 192, 3)), 0, 255)
    shot = folder / "shot.png"
    Image.fromarray(img.astype(np.uint8)).save(shot)
    text = folder / "notes.mp4"
    text.write_text("this is not a video, whatever its name says\n" * 20)
    return {"clip": clip, "shot": shot, "text": text}


def make_app(tmp_path: Path, db_url: str | None = None, **overrides):
    """The service on ``tmp_path/data`` (jobs in ``db_url``, default SQLite there) with two API keys."""
    config = ServeConfig(data_dir=tmp_path / "data", db_url=db_url, api_keys={KEY: "alice", OTHER_KEY: "bob"},
                         storage_root=tmp_path / "storage", **overrides)
    (tmp_path / "storage").mkdir(parents=True, exist_ok=True)
    return create_app(config)


def upload(client, path: Path, name: str | None = None, **params):
    with open(path, "rb") as fh:
        return client.post("/v1/jobs", headers=AUTH, params=params, files={"file": (name or path.name, fh)})


def wait_done(client, job_id: str) -> dict:
    job = client.get(f"/v1/jobs/{job_id}", headers=AUTH, params={"wait": 20}).json()
    assert job["status"] in ("done", "failed"), job
    return job


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def check_upload_video_and_image(tmp_path: Path, media, db_url: str | None = None) -> list[dict]:
    """Upload the clip (multipart) and the image (raw body); both end done with the local Scorer's scores
    and served thumbnails; the uploads are deleted. Returns the two finished jobs."""
    with TestClient(make_app(tmp_path, db_url)) as client:
        reply = upload(client, media["clip"])
        assert reply.status_code == 202 and reply.headers["location"] == f"/v1/jobs/{reply.json()['id']}"
        job = wait_done(client, reply.json()["id"])
        assert job["status"] == "done" and job["progress"] == 1.0
        result = job["result"]
        from gameqa.scoring import Scorer

        local = Scorer(DEFAULT_MODEL).score(media["clip"])  # the service's default model
        assert result["overall"] == pytest.approx(local.overall, abs=1e-9)
        assert result["frame_indices"] == local.frame_indices and result["timestamps"] == local.timestamps
        assert result["model"] == DEFAULT_MODEL and result["model_version"] == local.model_version
        assert result["path"] == "clip.mp4"  # the client's name, not the server's path
        worst = job["worst_frames"]
        assert [w["frame_index"] for w in worst] == [i for i, _, _ in local.worst_frames(3)]
        png = client.get(worst[0]["thumbnail_url"], headers=AUTH)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (192, 108)

        with open(media["shot"], "rb") as fh:  # raw body with ?filename=
            reply = client.post("/v1/jobs", headers={**AUTH, "Content-Type": "application/octet-stream"},
                                params={"filename": "shot.png"}, content=fh.read())
        image_job = wait_done(client, reply.json()["id"])
        assert image_job["result"]["kind"] == "image"
        assert image_job["result"]["frame_scores"] == [image_job["result"]["overall"]]
        assert client.get(image_job["worst_frames"][0]["thumbnail_url"], headers=AUTH).status_code == 200

        listed = client.get("/v1/jobs", headers=AUTH).json()
        assert len(listed) == 2 and all(j["status"] == "done" for j in listed)
        # the list links the thumbnails as each job's own page does
        assert {j["id"]: j["worst_frames"] for j in listed} == {j["id"]: j["worst_frames"] for j in (job, image_job)}
    # uploads are gone after their jobs; only the database (if SQLite) stays in the data folder
    assert files_under(tmp_path / "data").issubset({"jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm"})
    return [job, image_job]


def check_queue_full_and_cancel(tmp_path: Path, media, db_url: str | None = None) -> None:
    """A queue bound of 2: the third upload gets 429 and leaves no file; cancelling frees a place."""
    client = TestClient(make_app(tmp_path, db_url, max_queued=2))  # no `with`: workers never start
    try:
        first, second = upload(client, media["clip"]), upload(client, media["shot"])
        assert first.status_code == second.status_code == 202
        third = upload(client, media["clip"])
        assert third.status_code == 429 and third.headers["retry-after"] == "5"
        assert "queue is full" in third.json()["detail"]
        assert len(list((tmp_path / "data" / "uploads").iterdir())) == 2  # the refused upload left nothing
        cancelled = client.delete(f"/v1/jobs/{first.json()['id']}", headers=AUTH)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert len(list((tmp_path / "data" / "uploads").iterdir())) == 1  # its upload is deleted
        assert client.delete(f"/v1/jobs/{first.json()['id']}", headers=AUTH).status_code == 409
        assert upload(client, media["clip"]).status_code == 202
        health = client.get("/healthz").json()
        assert health["queue_depth"] == 2 and health["max_queued"] == 2
    finally:
        client.app.state.store.close()


def check_restart(tmp_path: Path, media, db_url: str | None = None, fail_db_url: str | None = None) -> None:
    """Jobs left queued, or running when the service died, resume on restart (``on_restart="resume"``) and
    their results survive another restart; with ``on_restart="fail"`` they fail and their upload goes."""
    first = TestClient(make_app(tmp_path, db_url))  # workers not started: both jobs stay queued
    ids = [upload(first, media["clip"]).json()["id"], upload(first, media["shot"]).json()["id"]]
    assert first.app.state.store.mark_running(ids[0])  # as if the service died while scoring it
    first.app.state.store.close()
    with TestClient(make_app(tmp_path, db_url, on_restart="resume")) as client:  # "restart"
        jobs = [wait_done(client, i) for i in ids]
        assert [j["status"] for j in jobs] == ["done", "done"]
    with TestClient(make_app(tmp_path, db_url)) as client:  # finished results survive another restart
        for job in jobs:
            again = client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()
            assert again["status"] == "done" and again["result"] == job["result"]
            assert again["worst_frames"] == job["worst_frames"]
            assert client.get(again["worst_frames"][0]["thumbnail_url"], headers=AUTH).status_code == 200

    failing = tmp_path / "second"
    failing.mkdir()
    queued = TestClient(make_app(failing, fail_db_url))
    job_ids = [upload(queued, media["clip"]).json()["id"], upload(queued, media["shot"]).json()["id"]]
    assert queued.app.state.store.mark_running(job_ids[1])
    queued.app.state.store.close()
    with TestClient(make_app(failing, fail_db_url, on_restart="fail")) as client:
        for job_id in job_ids:
            job = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
            assert job["status"] == "failed" and "restarted" in job["error"]
    assert list((failing / "data" / "uploads").iterdir()) == []


def check_clients_see_only_their_own_jobs(tmp_path: Path, media, db_url: str | None = None) -> None:
    """Bob's key sees none of Alice's jobs, results or thumbnails; Alice sees hers with either header."""
    with TestClient(make_app(tmp_path, db_url)) as client:
        job_id = upload(client, media["shot"]).json()["id"]
        job = wait_done(client, job_id)
        bob = {"X-API-Key": OTHER_KEY}
        assert client.get(f"/v1/jobs/{job_id}", headers=bob).status_code == 404
        assert client.get("/v1/jobs", headers=bob).json() == []
        assert client.get(job["worst_frames"][0]["thumbnail_url"], headers=bob).status_code == 404
        assert client.delete(f"/v1/jobs/{job_id}", headers=bob).status_code == 404
        assert client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get(job["worst_frames"][0]["thumbnail_url"], headers=AUTH).status_code == 200


def check_health_and_metrics(tmp_path: Path, media, db_url: str | None = None) -> None:
    """One finished job shows in /healthz and in the Prometheus text of /metrics."""
    with TestClient(make_app(tmp_path, db_url)) as client:
        wait_done(client, upload(client, media["clip"]).json()["id"])
        assert client.get("/healthz").json()["status"] == "ok"
        text = client.get("/metrics").text
        for line in ['gameqa_http_requests_total{method="POST",route="/v1/jobs",status="202"} 1',
                     'gameqa_jobs_total{status="done"} 1', "gameqa_frames_scored_total 2", "gameqa_queue_depth 0",
                     "# TYPE gameqa_job_latency_seconds histogram", "gameqa_job_latency_seconds_count 1"]:
            assert line in text, line


def check_storage_root(tmp_path: Path, media, db_url: str | None = None) -> None:
    """Storage jobs score files under the root (a path of 300 characters too), refuse the rest, delete nothing."""
    import os

    app = make_app(tmp_path, db_url)
    storage = tmp_path / "storage"
    (storage / "clips").mkdir()
    (storage / "clips" / "game.mp4").write_bytes(media["clip"].read_bytes())
    long_dir = storage / ("d" * 120) / ("e" * 120)  # the path is longer than 255 characters
    long_dir.mkdir(parents=True)
    long_path = f"{'d' * 120}/{'e' * 120}/{'f' * 60}.png"
    (storage / long_path).write_bytes(media["shot"].read_bytes())
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(media["clip"].read_bytes())
    os.symlink(outside, storage / "link.mp4")
    with TestClient(app) as client:
        def from_storage(path):
            return client.post("/v1/storage-jobs", headers=AUTH, json={"path": path})

        for path in ("clips/game.mp4", long_path):
            reply = from_storage(path)
            assert reply.status_code == 202, reply.text
            job = wait_done(client, reply.json()["id"])
            assert job["status"] == "done" and job["result"]["path"] == path and job["filename"] == path
        for path, status in [("../secret.mp4", 403), (str(outside), 403), ("link.mp4", 403),
                             ("clips/none.mp4", 404), ("clips", 404), ("a\x00b", 422), ("x" * 3000, 400)]:
            reply = from_storage(path)
            assert reply.status_code == status, (path, reply.text)
    assert (storage / "clips" / "game.mp4").exists() and (storage / long_path).exists()  # never deleted
