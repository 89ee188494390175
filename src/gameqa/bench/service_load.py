"""Load test of the scoring service on loopback: start the service as a separate process, let N
concurrent clients upload short clips and images for S seconds (each waits for its result before the
next upload), then check that every accepted job ended done and report latency and throughput.

Bounded and self-stopping: clients stop submitting at the deadline, in-flight jobs get a drain
timeout, and the service process is always stopped.
"""
from __future__ import annotations

from gameqa.models.registry import DEFAULT_MODEL

import asyncio
import io
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gameqa.errors import GameQAError
from gameqa.bench.net import free_port

__all__ = ["run_load_test", "print_load_report"]


def _make_inputs(folder: Path, size=(192, 108)) -> list[tuple[str, bytes, str]]:
    """Two short H.264 clips and two PNG screenshots: (name, bytes, content type)."""
    from PIL import Image

    from gameqa.bench.batch import make_clips

    clips = make_clips(folder, 2, size=size, seconds=1.0, fps=10, seed=7)
    items = [(p.name, p.read_bytes(), "video/mp4") for p in clips]
    rng = np.random.default_rng(3)
    width, height = size
    for n in range(2):
        yy, xx = np.mgrid[0:height, 0:width]
        base = (127 + 100 * np.sin(xx * (0.05 + 0.05 * n)) * np.cos(yy * 0.07))[..., None].repeat(3, axis=2)
        img = np.clip(base + rng.normal(0, 10 + 20 * n, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        items.append((f"shot_{n}.png", buf.getvalue(), "image/png"))
    return items


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_load_test(clients: int = 50, seconds: float = 60.0, workers: int = 2, max_queued: int = 64,
                  model: str = DEFAULT_MODEL, drain_s: float = 120.0, startup_s: float = 60.0) -> dict:
    """Run the load test; returns a report dict (``ok`` is False on any error reply other than 429,
    any lost or failed job)."""
    import httpx

    from gameqa.models.registry import get_card

    get_card(model)  # an unknown model fails here, not as hundreds of refused uploads
    with tempfile.TemporaryDirectory(prefix="gameqa-load-") as tmp:
        tmp_path = Path(tmp)
        inputs = _make_inputs(tmp_path / "inputs")
        port = free_port()
        key = secrets.token_urlsafe(16)
        cmd = [sys.executable, "-m", "gameqa.serve.cli", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(tmp_path / "data"), "--workers", str(workers), "--max-queued", str(max_queued),
               "--api-key", f"load:{key}", "--model", model, "--log-level", "warning"]
        log_path = tmp_path / "server.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_up(base, server, startup_s, log_path)
            report = asyncio.run(_drive(base, key, inputs, clients, seconds, drain_s))
            with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
                report["frames_scored"] = _metric(client.get("/metrics").text, "gameqa_frames_scored_total")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        # after the service stopped: what its database holds is what a restart would find
        from gameqa.serve.store import JobStore

        store = JobStore(f"sqlite:///{tmp_path / 'data' / 'jobs.sqlite3'}")
        try:
            listed = [{"id": j.id, "status": j.status} for j in store.list(limit=10**9)]
        finally:
            store.close()
        status_of = {j["id"]: j["status"] for j in listed}
        accepted = report.pop("accepted_ids")
        report["lost"] = sum(1 for j in accepted if status_of.get(j) != "done" and j not in report["failed_ids"])
        report["jobs_on_server"] = len(listed)
        report["uploads_left"] = sum(1 for _ in (tmp_path / "data" / "uploads").iterdir())
        report["failed"] = len(report.pop("failed_ids"))
        report["ok"] = (report["errors"] == 0 and report["lost"] == 0 and report["failed"] == 0
                        and report["jobs_on_server"] == len(accepted) and report["uploads_left"] == 0)
        return report


def _wait_up(base: str, server: subprocess.Popen, limit_s: float, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise GameQAError(None, f"the service exited at start: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise GameQAError(None, f"the service did not answer /healthz within {limit_s:.0f} s")


async def _drive(base: str, key: str, inputs, clients: int, seconds: float, drain_s: float) -> dict:
    import httpx

    stats = {"submitted": 0, "accepted": 0, "rejected_429": 0, "errors": 0, "error_samples": [],
             "latencies": [], "upload_latencies": [], "accepted_ids": [], "failed_ids": set(), "done": 0,
             "unfinished": 0}
    start = time.monotonic()
    deadline = start + seconds
    hard_stop = deadline + drain_s
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)

    def error(message: str) -> None:
        stats["errors"] += 1
        if len(stats["error_samples"]) < 10:
            stats["error_samples"].append(message)

    async def one_client(n: int, client: httpx.AsyncClient) -> None:
        turn = n
        while time.monotonic() < deadline:
            name, data, ctype = inputs[turn % len(inputs)]
            turn += 1
            t0 = time.monotonic()
            stats["submitted"] += 1
            try:
                reply = await client.post("/v1/jobs", files={"file": (name, data, ctype)})
            except httpx.HTTPError as exc:
                error(f"upload: {type(exc).__name__}: {exc}")
                continue
            stats["upload_latencies"].append(time.monotonic() - t0)
            if reply.status_code == 429:
                stats["rejected_429"] += 1
                await asyncio.sleep(min(1.0, float(reply.headers.get("retry-after", "1"))))
                continue
            if reply.status_code != 202:
                error(f"upload: HTTP {reply.status_code}: {reply.text[:200]}")
                continue
            job_id = reply.json()["id"]
            stats["accepted"] += 1
            stats["accepted_ids"].append(job_id)
            while True:
                left = hard_stop - time.monotonic()
                if left <= 0:
                    stats["unfinished"] += 1
                    return
                try:
                    poll = await client.get(f"/v1/jobs/{job_id}", params={"wait": min(25.0, max(0.1, left))})
                except httpx.HTTPError as exc:
                    error(f"poll: {type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.5)
                    continue
                if poll.status_code != 200:
                    error(f"poll: HTTP {poll.status_code}: {poll.text[:200]}")
                    break
                job = poll.json()
                if job["status"] == "done":
                    stats["done"] += 1
                    stats["latencies"].append(time.monotonic() - t0)
                    break
                if job["status"] in ("failed", "cancelled"):
                    stats["failed_ids"].add(job_id)
                    if len(stats["error_samples"]) < 10:
                        stats["error_samples"].append(f"job {job_id} {job['status']}: {job['error']}")
                    break

    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=60, limits=limits) as client:
        await asyncio.gather(*(one_client(n, client) for n in range(clients)))
    elapsed = time.monotonic() - start
    lat, up = stats.pop("latencies"), stats.pop("upload_latencies")
    return {
        "clients": clients, "seconds": seconds, "elapsed_s": elapsed, **stats,
        "latency_p50_s": _percentile(lat, 50), "latency_p99_s": _percentile(lat, 99),
        "latency_max_s": max(lat) if lat else float("nan"),
        "upload_p50_s": _percentile(up, 50), "upload_p99_s": _percentile(up, 99),
        "throughput_jobs_per_s": stats["done"] / elapsed if elapsed > 0 else 0.0,
        "cpu_cores": os.cpu_count(),
    }


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def print_load_report(report: dict, console=None) -> None:
    """The report as a table."""
    from gameqa.console import Table, console as plain_console

    console = console or plain_console()
    table = Table(title=f"service load: {report['clients']} clients for {report['seconds']:g} s "
                        f"({report['cpu_cores']} CPU cores, loopback)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("uploads sent", report["submitted"]), ("accepted (202)", report["accepted"]),
        ("refused 429 (queue full)", report["rejected_429"]), ("other error replies", report["errors"]),
        ("jobs done", report["done"]), ("jobs failed", report["failed"]), ("jobs lost", report["lost"]),
        ("unfinished at drain limit", report["unfinished"]),
        ("jobs in the service's database", report["jobs_on_server"]),
        ("uploaded files left after the run", report["uploads_left"]),
        ("latency p50 (upload to result)", f"{report['latency_p50_s']:.3f} s"),
        ("latency p99", f"{report['latency_p99_s']:.3f} s"),
        ("upload reply p50 / p99", f"{report['upload_p50_s']:.3f} / {report['upload_p99_s']:.3f} s"),
        ("throughput", f"{report['throughput_jobs_per_s']:.2f} jobs/s"),
        ("frames scored", f"{report['frames_scored']:.0f}"),
        ("wall time incl. drain", f"{report['elapsed_s']:.1f} s"),
        ("verdict", "OK" if report["ok"] else "FAILED"),
    ]
    for k, v in rows:
        table.add_row(k, str(v))
    console.print(table)
    for sample in report.get("error_samples", []):
        console.print(f"  {sample}", highlight=False, soft_wrap=True)
