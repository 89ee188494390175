"""The scoring service, through its real HTTP API (Starlette's test client drives the ASGI app):
jobs, results, restart, bad input and security, metrics, the OpenAPI spec under Schemathesis, and a
short version of the loopback load test."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
from fastapi.testclient import TestClient  # noqa: E402

from gameqa.serve.app import parse_api_keys  # noqa: E402
from serve_checks import (AUTH, KEY, check_clients_see_only_their_own_jobs, check_health_and_metrics,  # noqa: E402
                          files_under,
                          check_queue_full_and_cancel, check_restart, check_storage_root,
                          check_upload_video_and_image, make_app, media, upload, wait_done)

__all__ = ["media"]  # the fixture, imported from serve_checks


def test_upload_video_and_image_get_typed_results(tmp_path, media):
    check_upload_video_and_image(tmp_path, media)


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
    check_queue_full_and_cancel(tmp_path, media)


def test_restart_resumes_or_fails_unfinished_jobs_and_keeps_results(tmp_path, media):
    check_restart(tmp_path, media)


def test_storage_root_jobs_stay_inside_the_root(tmp_path, media):
    check_storage_root(tmp_path, media)


def test_clients_see_only_their_own_jobs(tmp_path, media):
    check_clients_see_only_their_own_jobs(tmp_path, media)


def test_health_and_metrics(tmp_path, media):
    check_health_and_metrics(tmp_path, media)


def test_models_openapi_page_and_headers(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        models = client.get("/v1/models", headers=AUTH).json()
        niqe = next(m for m in models if m["name"] == "niqe")
        assert niqe["lower_better"] is True and "weights" not in niqe
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


def test_an_api_key_file_that_is_not_text_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from gameqa.cli import app

    keys = tmp_path / "keys.txt"
    keys.write_bytes("ci:clé-de-test-1234\n".encode("latin-1"))
    result = CliRunner().invoke(app, ["serve", "--api-keys-file", str(keys), "--port", "1"])
    assert result.exit_code == 2, result.output
    assert f"error: {keys}: the API key file is not UTF-8 text (byte 5)" in result.output


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


def test_serve_refuses_a_bad_port_or_log_level_before_making_its_data_folder(tmp_path):
    from typer.testing import CliRunner

    from gameqa.cli import app

    runner = CliRunner()
    for option in (["--port", "70000"], ["--workers", "0"], ["--max-queued", "-1"], ["--max-upload-mb", "-5"],
                   ["--log-level", "bogus"]):
        result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path / "data"), *option])
        assert result.exit_code == 2, result.output
    assert "'bogus' is not one of critical, error" in result.output
    assert not (tmp_path / "data").exists()


def test_a_client_that_hangs_up_mid_upload_is_no_server_error(tmp_path, caplog):
    """A lying Content-Length, then the connection closed: the partial upload is removed, the log says the client
    went away (no traceback) and the metrics count no 500."""
    import logging
    import socket

    import httpx
    from webtest import ThreadServer

    app = make_app(tmp_path)
    with caplog.at_level(logging.INFO, logger="gameqa.serve"), ThreadServer(app) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /v1/jobs?filename=c.mp4 HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode()
                         + b"\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
                         + b"\0" * 1000)
            time.sleep(0.5)
        deadline = time.monotonic() + 10
        while "disconnected" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        metrics = httpx.get(f"{server.url}/metrics").text
    assert "a client disconnected before its upload was complete" in caplog.text
    assert "unexpected error" not in caplog.text and "Traceback" not in caplog.text
    assert 'status="500"' not in metrics
    assert list((tmp_path / "data" / "uploads").iterdir()) == []
