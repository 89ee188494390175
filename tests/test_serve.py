"""The scoring service, through its real HTTP API (Starlette's test client drives the ASGI app):
jobs, results, restart, bad input and security, metrics, the OpenAPI spec under Schemathesis, and a
short version of the loopback load test."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
from fastapi.testclient import TestClient  # noqa: E402

from gameqa.serve.app import ServeConfig, create_app, parse_api_keys  # noqa: E402

import clipgen  # noqa: E402

KEY, OTHER_KEY = "alice-key-123456", "bob-key-654321"
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def media(tmp_path_factory, need_ffmpeg) -> dict[str, Path]:
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


def make_app(tmp_path: Path, **overrides):
    config = ServeConfig(data_dir=tmp_path / "data", api_keys={KEY: "alice", OTHER_KEY: "bob"},
                         storage_root=tmp_path / "storage", **overrides)
    (tmp_path / "storage").mkdir(exist_ok=True)
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


def test_upload_video_and_image_get_typed_results(tmp_path, media):
    with TestClient(make_app(tmp_path)) as client:
        reply = upload(client, media["clip"])
        assert reply.status_code == 202 and reply.headers["location"] == f"/v1/jobs/{reply.json()['id']}"
        job = wait_done(client, reply.json()["id"])
        assert job["status"] == "done" and job["progress"] == 1.0
        result = job["result"]
        from gameqa.scoring import Scorer

        local = Scorer("niqe").score(media["clip"])
        assert result["overall"] == pytest.approx(local.overall, abs=1e-9)
        assert result["frame_indices"] == local.frame_indices and result["timestamps"] == local.timestamps
        assert result["model"] == "niqe" and result["model_version"] == local.model_version
        assert result["path"] == "clip.mp4"  # the client's name, not the server's path
        worst = job["worst_frames"]
        assert [w["frame_index"] for w in worst] == [i for i, _, _ in local.worst_frames(3)]
        png = client.get(worst[0]["thumbnail_url"], headers=AUTH)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (192, 108)

        with open(media["shot"], "rb") as fh:  # raw body with ?filename=
            reply = client.post("/v1/jobs", headers={**AUTH, "Content-Type": "application/octet-stream"},
                                params={"filename": "shot.png"}, content=fh.read())
        job = wait_done(client, reply.json()["id"])
        assert job["result"]["kind"] == "image" and job["result"]["frame_scores"] == [job["result"]["overall"]]
        assert client.get(job["worst_frames"][0]["thumbnail_url"], headers=AUTH).status_code == 200

        listed = client.get("/v1/jobs", headers=AUTH).json()
        assert len(listed) == 2 and all(j["status"] == "done" for j in listed)
    # uploads are gone after their jobs; only the database stays in the data folder
    assert files_under(tmp_path / "data").issubset({"jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm"})


def test_keep_true_keeps_the_upload(tmp_path, media):
    with TestClient(make_app(tmp_path)) as client:
        job = wait_done(client, upload(client, media["clip"], keep="true").json()["id"])
    kept = list((tmp_path / "data" / "uploads").iterdir())
    assert [p.name for p in kept] == [f"{job['id']}.mp4"]
    assert kept[0].read_bytes() == media["clip"].read_bytes()


def test_bad_input_and_security_are_refused_clearly(tmp_path, media):
    app = make_app(tmp_path, max_upload_bytes=20_000)
    with TestClient(app) as client:
        def post_raw(name, data, headers=AUTH, **params):
            return client.post("/v1/jobs", headers={**headers, "Content-Type": "application/octet-stream"},
                               params={"filename": name, **params}, content=data)

        clip = media["clip"].read_bytes()
        assert len(clip) < 20_000
        cases = [
            (client.post("/v1/jobs", files={"file": ("c.mp4", clip)}), 401, "API key is needed"),
            (client.post("/v1/jobs", headers={"X-API-Key": "wrong-key-000"}, files={"file": ("c.mp4", clip)}),
             401, "wrong API key"),
            (client.get("/v1/models", headers={"Authorization": "Bearer nope-nope-nope"}), 401, "wrong API key"),
            (post_raw("big.mp4", b"\0" * 30_000), 413, "over the limit"),
            (client.post("/v1/jobs", headers=AUTH, files={"file": ("big.mp4", b"\0" * 30_000)}), 413, "over the limit"),
            (upload(client, media["text"]), 415, "not a video or image"),
            (post_raw("../../escape.mp4", clip), 400, "plain name"),
            (client.post("/v1/jobs", headers=AUTH, files={"file": ("a/b.mp4", clip)}), 400, "plain name"),
            (client.post("/v1/jobs", headers=AUTH, files={"file": ("..\\b.mp4", clip)}), 400, "plain name"),
            (post_raw("x\nname.mp4", clip), 400, "plain name"),
            (post_raw("empty.mp4", b""), 400, "empty upload"),
            (client.post("/v1/jobs", headers=AUTH, files={"other": ("c.mp4", clip)}), 400, "no field named 'file'"),
            (post_raw("c.mp4", clip, model="no-such-model"), 400, "unknown model"),
            (post_raw("c.mp4", clip, model="../../etc"), 400, "unknown model"),
            (post_raw("c.mp4", clip, model="psnr"), 400, "full-reference"),
            (post_raw("c.mp4", clip, sample="often"), 422, "should match pattern"),
        ]
        for reply, status, words in cases:
            assert reply.status_code == status, (status, reply.text)
            assert words in str(reply.json()["detail"]), reply.json()
            assert "Traceback" not in reply.text
        assert client.get("/v1/jobs", headers=AUTH).json() == []  # none of them made a job
        assert app.state.metrics.rejected.value("too_large") == 2
    # nothing was written outside the data folder, and nothing is left inside it but the database
    assert files_under(tmp_path / "storage") == set()
    assert not any(p.name.startswith("escape") for p in tmp_path.rglob("*"))
    assert list((tmp_path / "data" / "uploads").iterdir()) == []


def test_a_full_queue_answers_429_and_cancel_frees_it(tmp_path, media):
    client = TestClient(make_app(tmp_path, max_queued=2))  # no `with`: workers never start, jobs stay queued
    first, second = upload(client, media["clip"]), upload(client, media["shot"])
    assert first.status_code == second.status_code == 202
    third = upload(client, media["clip"])
    assert third.status_code == 429 and third.headers["retry-after"] == "5" and "queue is full" in third.json()["detail"]
    assert len(list((tmp_path / "data" / "uploads").iterdir())) == 2  # the refused upload left nothing
    cancelled = client.delete(f"/v1/jobs/{first.json()['id']}", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert len(list((tmp_path / "data" / "uploads").iterdir())) == 1  # its upload is deleted
    assert client.delete(f"/v1/jobs/{first.json()['id']}", headers=AUTH).status_code == 409
    assert upload(client, media["clip"]).status_code == 202
    health = client.get("/healthz").json()
    assert health["queue_depth"] == 2 and health["max_queued"] == 2


def test_restart_resumes_or_fails_unfinished_jobs_and_keeps_results(tmp_path, media):
    first = TestClient(make_app(tmp_path))  # workers not started: both jobs stay queued
    ids = [upload(first, media["clip"]).json()["id"], upload(first, media["shot"]).json()["id"]]
    first.app.state.store.close()
    with TestClient(make_app(tmp_path, on_restart="resume")) as client:  # "restart"
        jobs = [wait_done(client, i) for i in ids]
        assert [j["status"] for j in jobs] == ["done", "done"]
    with TestClient(make_app(tmp_path)) as client:  # finished results survive another restart
        again = client.get(f"/v1/jobs/{ids[0]}", headers=AUTH).json()
        assert again["result"] == jobs[0]["result"]

    failing = tmp_path / "second"
    failing.mkdir()
    queued = TestClient(make_app(failing))
    job_id = upload(queued, media["clip"]).json()["id"]
    queued.app.state.store.close()
    with TestClient(make_app(failing, on_restart="fail")) as client:
        job = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        assert job["status"] == "failed" and "restarted" in job["error"]
    assert list((failing / "data" / "uploads").iterdir()) == []


def test_storage_root_jobs_stay_inside_the_root(tmp_path, media):
    app = make_app(tmp_path)
    storage = tmp_path / "storage"
    (storage / "clips").mkdir()
    (storage / "clips" / "game.mp4").write_bytes(media["clip"].read_bytes())
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(media["clip"].read_bytes())
    os.symlink(outside, storage / "link.mp4")
    with TestClient(app) as client:
        def from_storage(path):
            return client.post("/v1/storage-jobs", headers=AUTH, json={"path": path})

        reply = from_storage("clips/game.mp4")
        assert reply.status_code == 202
        job = wait_done(client, reply.json()["id"])
        assert job["status"] == "done" and job["result"]["path"] == "clips/game.mp4"
        for path, status in [("../secret.mp4", 403), (str(outside), 403), ("link.mp4", 403),
                             ("clips/none.mp4", 404), ("clips", 404), ("a\x00b", 422), ("x" * 3000, 400)]:
            reply = from_storage(path)
            assert reply.status_code == status, (path, reply.text)
    assert (storage / "clips" / "game.mp4").exists()  # a storage file is never deleted


def test_clients_see_only_their_own_jobs(tmp_path, media):
    with TestClient(make_app(tmp_path)) as client:
        job_id = upload(client, media["shot"]).json()["id"]
        wait_done(client, job_id)
        bob = {"X-API-Key": OTHER_KEY}
        assert client.get(f"/v1/jobs/{job_id}", headers=bob).status_code == 404
        assert client.get("/v1/jobs", headers=bob).json() == []
        assert client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_health_metrics_models_openapi_and_headers(tmp_path, media):
    with TestClient(make_app(tmp_path)) as client:
        wait_done(client, upload(client, media["clip"]).json()["id"])
        assert client.get("/healthz").json()["status"] == "ok"
        models = client.get("/v1/models", headers=AUTH).json()
        niqe = next(m for m in models if m["name"] == "niqe")
        assert niqe["lower_better"] is True and "weights" not in niqe
        text = client.get("/metrics").text
        for line in ['gameqa_http_requests_total{method="POST",route="/v1/jobs",status="202"} 1',
                     'gameqa_jobs_total{status="done"} 1', "gameqa_frames_scored_total 2", "gameqa_queue_depth 0",
                     "# TYPE gameqa_job_latency_seconds histogram", "gameqa_job_latency_seconds_count 1"]:
            assert line in text, line
        spec = client.get("/openapi.json").json()
        assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/storage-jobs", "/v1/models", "/healthz",
                "/metrics"} <= set(spec["paths"])
        page = client.get("/")
        assert page.status_code == 200 and "Drop a video or an image" in page.text
        nonce = page.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
        assert f'<script nonce="{nonce}">' in page.text and "https://" not in page.text
        assert page.headers["x-content-type-options"] == "nosniff"


def test_api_keys_parse():
    keys = parse_api_keys(["ci:abcdefgh12", "barekey-1234", "# comment", ""])
    assert keys["abcdefgh12"] == "ci" and keys["barekey-1234"].startswith("key-")
    from gameqa.errors import GameQAError

    with pytest.raises(GameQAError, match="shorter"):
        parse_api_keys(["x:short"])


def test_schemathesis_finds_no_server_error(tmp_path):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    app = make_app(tmp_path, max_queued=4)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, calls = [], []
    for op_result in schema.get_all_operations():
        operation = op_result.ok()

        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            for headers in (AUTH, {}):
                response = case.call(headers=headers)
                calls.append(response.status_code)
                if response.status_code >= 500:
                    failures.append((case.method, case.path, response.status_code, response.text[:200]))

        check()
    assert failures == []
    assert len(calls) > 100 and {200, 401, 404} <= set(calls)  # it reached the handlers


def test_short_load_test_loses_no_job():
    from gameqa.bench.service_load import run_load_test

    report = run_load_test(clients=10, seconds=3, workers=2, max_queued=64, drain_s=30)
    assert report["errors"] == 0 and report["lost"] == 0 and report["failed"] == 0, report
    assert report["done"] == report["accepted"] > 10
    assert report["latency_p50_s"] <= report["latency_p99_s"]
