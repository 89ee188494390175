"""Load test of the study app: N participants rating at once over real HTTP on loopback.

Run as ``python -m gameqa.bench.study_load [--participants 20] [--items 6]``. It writes a
small image study to a temporary folder, starts ``gameqa study serve`` as a subprocess on
127.0.0.1 (a free port), lets every participant join, consent, fetch each item and vote
(all starting together), then checks that the experimenter export holds exactly the votes
that got a 200, and stops the server. Bounded: every request has a timeout and the whole
run a deadline. Prints per-request latency (p50/p95/max), errors and throughput.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from gameqa.bench.net import free_port
from collections import defaultdict
from pathlib import Path

ADMIN_TOKEN = "load-test-experimenter-token"


def make_image_study(folder: str | os.PathLike, contents: int = 4, levels: int = 3,
                     training: int = 1, items: int | None = None, repeats: int = 1,
                     ratings: int = 1000, method: str = "acr5",
                     token: str = ADMIN_TOKEN) -> Path:
    """Write a study of ``contents x levels`` PNG stimuli (a gradient scene blurred and
    quantised more at each level) plus ``training`` images, and its study.toml; returns
    the TOML's path."""
    from PIL import Image, ImageFilter

    folder = Path(folder)
    stimuli = folder / "stimuli"
    stimuli.mkdir(parents=True, exist_ok=True)
    entries = []
    for c in range(contents):
        base = Image.linear_gradient("L").resize((96, 64)).convert("RGB")
        base = Image.merge("RGB", (base.getchannel(0), base.getchannel(0).rotate(90 * c),
                                   Image.effect_mandelbrot((96, 64), (-2 + c * .1, -1, 1, 1), 64)))
        for level in range(levels):
            image = base.filter(ImageFilter.GaussianBlur(level * 1.5)).quantize(2 ** (6 - level)).convert("RGB")
            name = f"c{c}_q{level}"
            image.save(stimuli / f"{name}.png")
            entries.append(f'[[stimuli]]\nid = "{name}"\nfile = "{name}.png"\ncontent = "c{c}"\n')
    for t in range(training):
        name = f"train{t}"
        Image.effect_mandelbrot((96, 64), (-2, -1, 1, 1), 32 + 32 * t).convert("RGB").save(stimuli / f"{name}.png")
        entries.append(f'[[training]]\nid = "{name}"\nfile = "{name}.png"\n')
    distinct = contents * levels if items is None else items
    text = (f'[study]\nname = "loadtest"\ntitle = "Load test"\nmethod = "{method}"\n'
            f'stimulus_dir = "stimuli"\nratings_per_stimulus = {ratings}\n'
            f'session_items = {distinct + repeats}\nrepeats = {repeats}\nimage_seconds = 1\n'
            f'experimenter_token = "{token}"\n\n'
            '[[questions]]\nid = "display"\ntext = "Which screen are you using?"\n'
            'choices = ["laptop", "desktop monitor", "TV", "phone or tablet"]\n\n'
            + "\n".join(entries))
    path = folder / "study.toml"
    path.write_text(text, encoding="utf-8")
    return path


class StudyServer:
    """``gameqa study serve`` in a subprocess on 127.0.0.1; ``kill()`` sends SIGKILL."""

    def __init__(self, study_file: str | os.PathLike, db_url: str, port: int | None = None,
                 log_file: str | os.PathLike | None = None):
        self.study_file, self.db_url = os.fspath(study_file), db_url
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "StudyServer":
        import httpx

        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gameqa.subjective.cli", "serve", self.study_file,
             "--host", "127.0.0.1", "--port", str(self.port), "--db", self.db_url,
             "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if log is not subprocess.DEVNULL:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"study server exited with {self.process.returncode}")
            try:
                if httpx.get(self.base_url + "/api/study", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"study server did not answer within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "StudyServer":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


def _participant(base_url: str, barrier: threading.Barrier, deadline: float,
                 latencies: dict, errors: list, accepted: list, lock: threading.Lock) -> None:
    """One participant's whole session: join, consent, then fetch and rate every item."""
    import httpx

    def timed(kind: str, method: str, url: str, **kwargs):
        if time.monotonic() > deadline:
            raise TimeoutError("run deadline reached")
        start = time.perf_counter()
        response = client.request(method, url, **kwargs)
        elapsed = time.perf_counter() - start
        with lock:
            latencies[kind].append(elapsed)
        if response.status_code >= 400:
            raise RuntimeError(f"{kind}: HTTP {response.status_code} {response.text[:200]}")
        return response

    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        try:
            barrier.wait(timeout=30)
            token = timed("join", "POST", "/api/join").json()["token"]
            timed("page", "GET", f"/p/{token}")
            timed("state", "GET", f"/api/p/{token}/state")
            state = timed("consent", "POST", f"/api/p/{token}/consent",
                          json={"consent": True, "answers": {"display": "laptop"}}).json()
            while state["stage"] == "rate":
                item = state["item"]
                timed("media", "GET", f"/api/p/{token}/media/{item['position']}")
                score = 1 + (item["position"] * 7 + len(token)) % 5
                state = timed("vote", "POST", f"/api/p/{token}/vote",
                              json={"position": item["position"], "nonce": item["nonce"],
                                    "score": score}).json()
                with lock:
                    accepted.append((token, item["position"], score))
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")


def run_study_load(participants: int = 20, items: int = 6, repeats: int = 1,
                   timeout_s: float = 120.0, workdir: str | os.PathLike | None = None,
                   base_url: str | None = None) -> dict:
    """Run the load test; returns a dict with ``participants``, ``votes_accepted``,
    ``votes_exported``, ``errors`` (messages), ``wall_s``, ``requests_per_s`` and per request
    kind ``latency_ms`` = {kind: {n, p50, p95, max}}. With ``base_url`` it targets a running
    server whose study came from ``make_image_study`` (same experimenter token)."""
    import httpx

    with tempfile.TemporaryDirectory(prefix="gameqa-load-") as scratch:
        folder = Path(workdir or scratch)
        server = None
        if base_url is None:
            study_file = make_image_study(folder / "study", items=items, repeats=repeats)
            server = StudyServer(study_file, f"sqlite:///{folder / 'votes.sqlite'}",
                                 log_file=folder / "server.log").start()
            base_url = server.base_url
        try:
            latencies: dict[str, list[float]] = defaultdict(list)
            errors: list[str] = []
            accepted: list[tuple] = []
            lock = threading.Lock()
            barrier = threading.Barrier(participants)
            deadline = time.monotonic() + timeout_s
            threads = [threading.Thread(target=_participant, daemon=True,
                                        args=(base_url, barrier, deadline, latencies, errors,
                                              accepted, lock))
                       for _ in range(participants)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=max(0.0, deadline - time.monotonic()) + 15)
            wall = time.perf_counter() - start
            hung = sum(thread.is_alive() for thread in threads)
            if hung:
                errors.append(f"{hung} participant(s) still running at the deadline")
            export = httpx.get(base_url + "/api/admin/votes.csv", params={"all": "true"},
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
            export.raise_for_status()
            exported = list(csv.DictReader(io.StringIO(export.text)))
        finally:
            if server is not None:
                server.stop()
    requests = sum(len(v) for v in latencies.values())
    return {
        "participants": participants, "votes_accepted": len(accepted),
        "votes_exported": len(exported), "errors": errors, "wall_s": wall,
        "requests": requests, "requests_per_s": requests / wall if wall else float("nan"),
        "latency_ms": {kind: {"n": len(values),
                              "p50": 1000 * statistics.median(values),
                              "p95": 1000 * _quantile(values, 0.95),
                              "max": 1000 * max(values)}
                       for kind, values in sorted(latencies.items())},
    }


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def print_load_report(report: dict) -> None:
    """Print the report as a small table."""
    print(f"participants {report['participants']}, votes accepted {report['votes_accepted']}, "
          f"exported {report['votes_exported']}, errors {len(report['errors'])}, "
          f"wall {report['wall_s']:.2f} s, {report['requests']} requests "
          f"({report['requests_per_s']:.1f}/s)")
    print(f"{'request':<10}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for kind, row in report["latency_ms"].items():
        print(f"{kind:<10}{row['n']:>6}{row['p50']:>10.1f}{row['p95']:>10.1f}{row['max']:>10.1f}")
    for message in report["errors"][:10]:
        print("error:", message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--items", type=int, default=6, help="distinct stimuli per participant")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of the run (s)")
    args = parser.parse_args(argv)
    report = run_study_load(args.participants, args.items, args.repeats, args.timeout)
    print_load_report(report)
    ok = not report["errors"] and report["votes_accepted"] == report["votes_exported"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
