"""Score thousands of files as a batch, on this machine or on a Ray cluster, with resumable output.

``batch_score(inputs, model, out, engine="local"|"ray")`` expands folders, globs and list/manifest
files, skips every file the output already holds a row for (so an interrupted run resumes without
scoring a finished file twice), and streams one row per file to ``out``:

* ``.jsonl``: each row is appended and flushed as it arrives; a torn last line from a killed run is cut
  off on resume.
* ``.parquet``: rows are appended to a journal beside it (``<out>.journal.jsonl``) as they arrive; when
  the run ends (or is interrupted with Ctrl-C) the Parquet file is written in one step with every row,
  and the journal removed. A run killed outright leaves the journal, which the next run picks up.

Both engines run the same function, ``score_chunk``, on chunks of files, and both write the rows in
input order: the local engine in this process (``workers=1``) or in a process pool; the Ray engine in
one long-lived actor per CPU (``ChunkScorer``) that builds the model once and scores chunk after chunk,
on a local Ray by default or on a cluster when ``address`` is given (the files must then be readable at
the same paths on every node). Any registry model works: a model registered from a folder travels to
the workers as that folder's path.
"""
from __future__ import annotations

from gameqa.media.policy import DEFAULT_BATCH
from gameqa.models.registry import DEFAULT_MODEL

import csv
import json
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from gameqa.errors import ConfigError, GameQAError
from gameqa.sinks import write_via_temp

__all__ = ["BatchReport", "ChunkScorer", "ScoreSpec", "batch_score", "score_chunk", "read_rows", "ENGINES"]

ENGINES = ("local", "ray")
OUT_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class ScoreSpec:
    """What every worker needs to build the same scorer."""

    model: str = DEFAULT_MODEL
    sample: str = "fps:2"
    batch_size: int = DEFAULT_BATCH
    threads: int = 1
    pooling: Optional[str] = None
    per_frame: bool = True


@dataclass
class BatchReport:
    """What a batch run did."""

    out: str
    engine: str
    total: int = 0
    skipped: int = 0
    scored: int = 0
    failed: int = 0
    seconds: float = 0.0
    engine_start_s: float = 0.0
    engine_stop_s: float = 0.0
    input_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    earlier_failures: list[str] = field(default_factory=list)  # failed rows of earlier runs, not retried

    @property
    def files_per_s(self) -> float:
        done = self.scored + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0


# -- the work: one chunk of files -> rows --------------------------------------------------------------
_SCORERS: dict = {}  # per worker process: spec -> Scorer
_PROBES: dict = {}  # in the driver: spec -> the Scorer that checked the model


def score_chunk(paths: Sequence[str], spec: ScoreSpec) -> list[dict]:
    """Score files with the spec's model; one row per file (a failure is a row with ``error``).

    The scorer is built once per worker process and reused by later chunks."""
    from gameqa.scoring import Scorer

    scorer = _SCORERS.get(spec)
    if scorer is None:
        scorer = _SCORERS[spec] = Scorer(model=spec.model, sample=spec.sample, batch_size=spec.batch_size,
                                         threads=spec.threads, pooling=spec.pooling)
    rows = []
    for path in paths:
        try:
            result = scorer.score(path)
        except GameQAError as exc:
            rows.append(_error_row(path, spec, scorer, str(exc)))
            continue
        except Exception as exc:  # a file that breaks a decoder must not end the whole batch
            rows.append(_error_row(path, spec, scorer, f"{path}: internal error ({type(exc).__name__}: {exc})"))
            continue
        rows.append(_result_row(result, spec))
    return rows


def warm_up(spec: ScoreSpec, hold_s: float = 0.0) -> int:
    """Build the spec's scorer in this worker process (engine start-up); returns the process id."""
    score_chunk([], spec)
    time.sleep(hold_s)  # keep this worker busy so the other warm-up tasks land on other workers
    return os.getpid()


def _result_row(result, spec: ScoreSpec) -> dict:
    row = {
        "path": result.path, "kind": result.kind, "model": result.model, "model_version": result.model_version,
        "sample": spec.sample, "pooling": result.pooling, "overall": result.overall,
        "lower_better": result.lower_better, "frames": len(result.frame_scores),
        "frame_indices": result.frame_indices if spec.per_frame else None,
        "timestamps": result.timestamps if spec.per_frame else None,
        "frame_scores": result.frame_scores if spec.per_frame else None,
        "decode_s": result.timing.decode_s, "model_s": result.timing.model_s, "total_s": result.timing.total_s,
        "error": None, "gameqa_version": result.gameqa_version,
    }
    if result.bitstream is not None:  # a model with a quantiser head: the pixel score and whether the head applied
        summary = result.summary()
        row.update(pixel_overall=summary["pixel_overall"], head=summary["head"])
    return row


def _error_row(path: str, spec: ScoreSpec, scorer, message: str) -> dict:
    from gameqa import __version__

    return {
        "path": path, "kind": None, "model": scorer.card.name, "model_version": scorer.card.version,
        "sample": spec.sample, "pooling": scorer.pooling, "overall": None, "lower_better": scorer.card.lower_better,
        "frames": 0, "frame_indices": None, "timestamps": None, "frame_scores": None,
        "decode_s": None, "model_s": None, "total_s": None, "error": message, "gameqa_version": __version__,
    }


# -- inputs --------------------------------------------------------------------------------------------
def expand_inputs(items: Iterable[str]) -> tuple[list[str], list[str]]:
    """Files from folders, globs, list files (.txt/.lst/@FILE) and manifests (.csv/.jsonl with a ``path``
    column, relative to the manifest's folder); absolute paths, in order, without repeats."""
    from gameqa.scoring import collect_inputs

    plain, manifest_files, errors = [], [], []
    for item in items:
        suffix = Path(item).suffix.lower()
        if suffix in (".csv", ".jsonl") and os.path.isfile(item):
            try:
                manifest_files.extend(_manifest_paths(item))
            except ConfigError as exc:
                errors.append(str(exc))
        else:
            plain.append(item)
    files, input_errors = collect_inputs(plain)
    errors.extend(str(e) for e in input_errors)
    seen: set[str] = set()
    out = []
    for f in [*files, *manifest_files]:
        full = os.path.abspath(f)
        if full not in seen:
            seen.add(full)
            out.append(full)
    return out, errors


def _manifest_paths(manifest: str) -> list[str]:
    base = Path(manifest).parent
    try:
        if manifest.lower().endswith(".csv"):
            with open(manifest, newline="") as fh:
                reader = csv.DictReader(fh)
                if "path" not in (reader.fieldnames or []):
                    raise ConfigError(manifest, "manifest has no 'path' column")
                paths = [row["path"] for row in reader if row.get("path")]
        else:
            paths = []
            with open(manifest) as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        obj = json.loads(line)
                        if not isinstance(obj, dict) or not obj.get("path"):
                            raise ConfigError(manifest, f"line {lineno}: no 'path'")
                        if not isinstance(obj["path"], str):
                            raise ConfigError(manifest, f"line {lineno}: 'path' must be a string, "
                                                        f"not {obj['path']!r}")
                        paths.append(obj["path"])
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(manifest, f"cannot read manifest ({exc})") from None
    return [p if os.path.isabs(p) else str(base / p) for p in paths]


# -- output: rows in, resumable -----------------------------------------------------------------------
class _JsonlSink:
    """Appends rows to a JSONL file, flushed per row; reads back what an earlier run wrote."""

    def __init__(self, path: str):
        self.path = path
        self.rows = _read_jsonl_truncating(path)
        self._fh = None  # opened at the first row: a run with nothing to score makes no file

    def write(self, row: dict) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a")
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is None:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


class _ParquetSink:
    """Journal (JSONL) while running; one Parquet file, written in one step, at the end."""

    def __init__(self, path: str):
        self.path = path
        earlier = read_rows(path) if os.path.exists(path) else []
        self._journal = _JsonlSink(path + ".journal.jsonl")
        self.rows = earlier + self._journal.rows
        self._earlier = earlier

    def write(self, row: dict) -> None:
        self._journal.write(row)

    def close(self) -> None:
        self._journal.close()
        journal = _read_jsonl_truncating(self._journal.path)
        if journal:  # else the Parquet file stays as it was (or is not made)
            _write_parquet(self._earlier + journal, self.path)
        if os.path.exists(self._journal.path):
            os.unlink(self._journal.path)


_ROW_START = b'{"path": '  # how every row this module writes begins (json.dumps of a dict with path first)


def _read_jsonl_truncating(path: str) -> list[dict]:
    """Rows of a JSONL file; a torn last line (a killed writer: the start of a row, no newline) is cut off the
    file. Anything else that is not a row (a file of another program) is an error and the file is left as it is."""
    if not os.path.exists(path):
        return []
    if os.path.isdir(path):
        raise ConfigError(path, "is a folder; give a .jsonl or .parquet file name")
    rows, good_end = [], 0
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(path, f"cannot read ({exc.strerror or exc})") from None
    pos = 0
    for number, line in enumerate(data.splitlines(keepends=True), 1):
        end = pos + len(line)
        if not line.endswith(b"\n") and (line.startswith(_ROW_START) or _ROW_START.startswith(line)):
            break  # torn
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict) or "path" not in obj:
            raise ConfigError(path, f"line {number}: not a row of scores; is this a gameqa batch output?")
        rows.append(obj)
        good_end = pos = end
    if good_end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return rows


def _arrow_schema():
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("kind", pa.string()), ("model", pa.string()), ("model_version", pa.string()),
        ("sample", pa.string()), ("pooling", pa.string()), ("overall", pa.float64()), ("lower_better", pa.bool_()),
        ("frames", pa.int64()), ("frame_indices", pa.list_(pa.int64())), ("timestamps", pa.list_(pa.float64())),
        ("frame_scores", pa.list_(pa.float64())), ("decode_s", pa.float64()), ("model_s", pa.float64()),
        ("total_s", pa.float64()), ("error", pa.string()), ("gameqa_version", pa.string()),
        ("pixel_overall", pa.float64()), ("head", pa.string()),
    ])


def _write_parquet(rows: list[dict], path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    write_via_temp(path, lambda tmp: pq.write_table(table, tmp))


def read_rows(path: str) -> list[dict]:
    """Rows of a batch output (.jsonl or .parquet)."""
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except (OSError, ValueError) as exc:
            raise ConfigError(path, f"cannot read Parquet output ({exc})") from None
    return _read_jsonl_truncating(path)


def _open_sink(out: str):
    suffix = Path(out).suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise ConfigError(out, f"output must end in {' or '.join(OUT_SUFFIXES)}")
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ConfigError(out, f"cannot make its folder {folder} ({exc.strerror or exc})") from None
    if os.path.isdir(out):
        raise ConfigError(out, "is a folder; give a .jsonl or .parquet file name")
    existed = os.path.exists(out)
    try:  # before anything is scored: a place that takes no file (a read-only or virtual file system) is one line
        with open(out, "a"):
            pass
    except OSError as exc:
        raise ConfigError(out, f"cannot write ({exc.strerror or exc})") from None
    if not existed:
        os.unlink(out)  # a run with nothing to score makes no file
    return _ParquetSink(out) if suffix == ".parquet" else _JsonlSink(out)


# -- the driver ----------------------------------------------------------------------------------------
def _same_job(row: dict, probe, sample: str, per_frame: bool) -> bool:
    """Whether an earlier row answers this run: same model, sampling and pooling, and per-frame scores if this
    run keeps them (a row with them also answers a run without)."""
    return (row.get("model") == probe.card.name and row.get("sample") == sample
            and row.get("pooling") == probe.pooling
            and (not per_frame or row.get("error") is not None or row.get("frame_scores") is not None))


def batch_score(
    inputs: Iterable[str],
    model: str = DEFAULT_MODEL,
    out: str = "scores.jsonl",
    engine: str = "local",
    address: Optional[str] = None,
    sample: str = "fps:2",
    batch_size: int = DEFAULT_BATCH,
    threads: int = 1,
    pooling: Optional[str] = None,
    per_frame: bool = True,
    workers: Optional[int] = None,
    chunk_size: int = 8,
    retry_failed: bool = False,
    on_row: Optional[Callable[[dict, int, int], None]] = None,
) -> BatchReport:
    """Score every input file not yet in ``out``; returns counts and time.

    ``engine="local"`` uses ``workers`` processes (default 1: this process); ``engine="ray"`` runs one Ray
    actor per CPU on a local Ray with ``workers`` CPUs (default: all) or on the cluster at ``address``
    (``workers`` then caps the actors). Rows reach ``out`` in input order whatever the engine.
    ``retry_failed`` scores again the files whose earlier row is an error. ``on_row(row, done, todo)``
    sees each new row."""
    if engine not in ENGINES:
        raise ConfigError(None, f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    from gameqa.scoring import Scorer

    probe = Scorer(model=model, sample=sample, batch_size=batch_size, threads=threads, pooling=pooling)
    if probe.card.full_reference:
        raise ConfigError(None, f"model {probe.card.name!r} is full-reference (it needs each file's reference); "
                                "a batch scores with no-reference models")
    if probe.card.weights is not None and (probe.card.weights.parent / "model.json").is_file():
        model = str(probe.card.weights.parent.resolve())  # worker processes find the model by its folder
    spec = ScoreSpec(model=model, sample=sample, batch_size=batch_size, threads=threads, pooling=pooling,
                     per_frame=per_frame)
    _PROBES[spec] = probe  # names the model in the error row of a file whose worker died
    files, input_errors = expand_inputs(inputs)
    report = BatchReport(out=out, engine=engine, input_errors=input_errors)
    start = time.perf_counter()
    sink = _open_sink(out)
    try:
        finished = {r["path"] for r in sink.rows if _same_job(r, probe, sample, per_frame)
                    and not (retry_failed and r.get("error"))}
        latest = {r["path"]: r for r in sink.rows if _same_job(r, probe, sample, per_frame)}  # a retry's row is later
        report.earlier_failures = [] if retry_failed else [
            latest[f]["error"] for f in files if f in latest and latest[f].get("error")]
        todo = [f for f in files if f not in finished]
        report.total, report.skipped = len(files), len(files) - len(todo)
        chunks = [todo[i:i + max(1, chunk_size)] for i in range(0, len(todo), max(1, chunk_size))]
        runner = _run_ray if engine == "ray" else _run_local
        done = 0
        for rows in (runner(chunks, spec, workers, address, report) if chunks else ()):
            for row in rows:
                sink.write(row)
                done += 1
                if row.get("error"):
                    report.failed += 1
                    report.failures.append(row["error"])
                else:
                    report.scored += 1
                if on_row is not None:
                    on_row(row, done, len(todo))
    finally:
        sink.close()
        report.seconds = time.perf_counter() - start
    return report


def _run_local(chunks, spec: ScoreSpec, workers, _address, report: BatchReport) -> Iterator[list[dict]]:
    """Chunks scored in this process (``workers=1``) or a process pool; rows come back in input order."""
    workers = max(1, int(workers or 1))
    if workers == 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield score_chunk(chunk, spec)
        return
    import multiprocessing
    import sys

    t0 = time.perf_counter()
    # fork on Linux: workers start at once and need no importable __main__; spawn elsewhere
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_ignore_sigint)
    finished = False
    try:
        for fut in [pool.submit(warm_up, spec, 0.2) for _ in range(workers)]:
            fut.result()
        report.engine_start_s = time.perf_counter() - t0
        queue = iter(chunks)
        ahead: deque = deque(pool.submit(score_chunk, chunk, spec) for chunk in islice(queue, 2 * workers))
        while ahead:
            rows = ahead.popleft().result()  # the oldest chunk: output keeps the input order
            nxt = next(queue, None)
            if nxt is not None:
                ahead.append(pool.submit(score_chunk, nxt, spec))
            yield rows
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # interrupted (Ctrl-C, SIGTERM) or failed: the chunks in the workers' hands are not waited for
            _stop_pool(pool)


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the driver (a terminal sends it to the whole process group), which stops
    them itself: no traceback from each worker, no worker that dies between two tasks and hangs the pool."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """End a process pool now: queued chunks cancelled, the workers terminated (their rows would be dropped
    anyway: only the rows written to the output count, and a rerun scores the rest)."""
    import signal

    import threading

    processes = list((getattr(pool, "_processes", None) or {}).values())
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # a 2nd Ctrl-C waits for this
    try:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


# -- the Ray engine: one long-lived actor per CPU ------------------------------------------------------
class ChunkScorer:
    """A Ray actor body: builds the spec's scorer once, then scores chunk after chunk with ``score_chunk``
    (the very function the local engine runs, so the rows are the same)."""

    def __init__(self, spec: ScoreSpec):
        self.spec = spec
        warm_up(spec)
        self.ready_at = time.time()

    def ready(self) -> float:
        """When this actor had its model built (wall clock)."""
        return self.ready_at

    def score(self, paths: Sequence[str]) -> list[dict]:
        return score_chunk(paths, self.spec)


RAY_INIT_OPTIONS = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
CHUNKS_IN_FLIGHT = 2  # per actor: the next chunk is already queued when one finishes


def _run_ray(chunks, spec: ScoreSpec, workers, address, report: BatchReport) -> Iterator[list[dict]]:
    """Chunks scored by one actor per CPU on a local Ray (or the cluster at ``address``), rows in input
    order. Start-up (Ray, actors, models) and shut-down are timed in the report."""
    t0_wall = time.time()
    try:
        import ray
    except ImportError:
        raise ConfigError(None, "the ray engine needs Ray: pip install 'gameqa[cluster]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        _start_ray(ray, address, workers)
    from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

    actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(ChunkScorer)
    actors: list = []
    try:
        cpus = ray.cluster_resources() if started_here else ray.available_resources()
        n_actors = max(1, min(int(cpus.get("CPU", 1)), int(workers or 1 << 30), len(chunks)))
        actors = [actor_class.remote(spec) for _ in range(n_actors)]
        ready_refs = [a.ready.remote() for a in actors]  # chunks queue behind the model build; no waiting here
        yield from _stream_in_order(ray, actors, lambda: actor_class.remote(spec), chunks, spec)
        ready_at = []
        for ref in ready_refs:  # an actor replaced mid-run has no answer: the others tell
            try:
                ready_at.append(ray.get(ref, timeout=5))
            except (RayActorError, RayTaskError, WorkerCrashedError, ray.exceptions.GetTimeoutError):
                pass
        report.engine_start_s = (max(ready_at) - t0_wall) if ready_at else float("nan")  # Ray up, models built
    finally:
        t1 = time.perf_counter()
        if started_here:
            ray.shutdown()
        else:
            for actor in actors:
                ray.kill(actor)
        report.engine_stop_s = time.perf_counter() - t1


def _start_ray(ray, address: Optional[str], workers: Optional[int]) -> None:
    """Connect to the cluster at ``address``, or start a local Ray with ``workers`` CPUs (default: all).

    A local start is tried twice: on a CPU-starved machine Ray's raylet aborts when its dashboard agent
    (a Python process) has not written its ports within Ray's fixed wait (about 15 s), and the driver
    gives up on the raylet after a fixed 30 s. A failed attempt's processes are ended."""
    if address:
        _check_reachable(address)
    tries = 1 if address else 2
    for attempt in range(1, tries + 1):
        before = _descendants()
        try:
            if address:
                ray.init(address=address, **RAY_INIT_OPTIONS)
            else:
                ray.init(num_cpus=int(workers or os.cpu_count() or 1), **RAY_INIT_OPTIONS)
            return
        except Exception as exc:  # noqa: BLE001  (Ray raises bare Exception when its processes start too slowly)
            try:
                ray.shutdown()
            except Exception:  # noqa: BLE001
                pass
            # a failed start leaves its GCS and helpers running, and agents the crashed raylet orphaned
            _end_processes((_descendants() - before) | _our_session_processes())
            if attempt == tries:
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise ConfigError(address, f"cannot start or reach {where} ({type(exc).__name__}: {exc})") from None


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) that answers no TCP connection is one ConfigError at once: Ray
    itself goes on retrying such an address for many minutes. ``auto`` and ``local`` are left to Ray."""
    import socket

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # auto, local, or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(address, f"no Ray cluster answers there ({exc.strerror or type(exc).__name__}); is "
                                   "`ray start --head` running on that machine?") from None


def _descendants() -> set[int]:
    """Process ids of this process's children, grandchildren, ... (Linux /proc; empty elsewhere)."""
    parent_of = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for name in entries:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    parent_of[int(name)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parent_of.items() if parent in frontier} - found
        found |= frontier
    return found


def _our_session_processes() -> set[int]:
    """Process ids holding files of a Ray session this process started (Ray names those folders
    ``session_<date>_<time>_<driver pid>``); Linux /proc, empty elsewhere."""
    marker = f"_{os.getpid()}/"
    found = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            links = [os.readlink(f"/proc/{name}/fd/{fd}") for fd in os.listdir(f"/proc/{name}/fd")]
        except OSError:
            continue
        if any("/session_" in link and marker in link for link in links):
            found.add(int(name))
    return found


def _end_processes(pids: set[int], grace_s: float = 3.0) -> None:
    """SIGTERM these processes (our own), SIGKILL those still alive after ``grace_s``, reap our children."""
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {pid for pid in alive if _running(pid)}
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except (ChildProcessError, OSError):
            pass


def _running(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _stream_in_order(ray, actors: list, new_actor: Callable, chunks: Sequence[list[str]],
                     spec: ScoreSpec) -> Iterator[list[dict]]:
    """Keep every actor busy with ``CHUNKS_IN_FLIGHT`` chunks and yield each chunk's rows in input order.

    When an actor dies (a file that crashes a decoder, a killed process) it is replaced, and every chunk
    it held is tried again file by file; a file that fails once more, alone on a fresh actor, gets an
    error row. Workers that keep dying with no chunk finished in between end the run with an error."""
    from ray.exceptions import RayActorError, WorkerCrashedError

    # a work item: (chunk index, part key, paths, alone); "alone" items run with nothing queued beside them
    todo: deque = deque((index, (), list(chunk), False) for index, chunk in enumerate(chunks))
    parts_expected = [1] * len(chunks)
    parts_done: dict[int, dict[tuple, list[dict]]] = {}
    in_flight: dict = {}  # ref -> (item, actor slot, actor generation)
    load = [0] * len(actors)
    alone = [False] * len(actors)
    generation = [0] * len(actors)
    deaths_in_a_row, next_out = 0, 0
    try:
        while next_out < len(chunks):
            for slot in range(len(actors)):
                while todo and load[slot] < CHUNKS_IN_FLIGHT and not alone[slot]:
                    if todo[0][3] and load[slot]:
                        break
                    item = todo.popleft()
                    in_flight[actors[slot].score.remote(item[2])] = (item, slot, generation[slot])
                    load[slot] += 1
                    alone[slot] = item[3]
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            item, slot, gen = in_flight.pop(ready[0])
            index, part, paths, was_alone = item
            if gen == generation[slot]:
                load[slot] -= 1
                alone[slot] = False
            try:
                rows = ray.get(ready[0])
                deaths_in_a_row = 0
            except (RayActorError, WorkerCrashedError) as exc:
                if gen == generation[slot]:  # replace the dead actor once, however many chunks it held
                    deaths_in_a_row += 1
                    if deaths_in_a_row > max(8, 3 * len(actors)):
                        raise GameQAError(None, f"Ray workers keep dying ({type(exc).__name__}); stopping") from None
                    ray.kill(actors[slot])
                    actors[slot] = new_actor()
                    generation[slot] += 1
                    load[slot], alone[slot] = 0, False
                if len(paths) > 1:  # try its files one by one
                    parts_expected[index] += len(paths) - 1
                    todo.extendleft(reversed([(index, part + (k,), [p], False) for k, p in enumerate(paths)]))
                    continue
                if not was_alone:  # it may have been queued behind the file that killed the worker
                    todo.appendleft((index, part, paths, True))
                    continue
                rows = [_crash_row(paths[0], spec, f"the worker process died while scoring it ({type(exc).__name__})")]
            parts_done.setdefault(index, {})[part] = rows
            while next_out < len(chunks) and len(parts_done.get(next_out, ())) == parts_expected[next_out]:
                done = parts_done.pop(next_out)
                next_out += 1
                yield [row for key in sorted(done) for row in done[key]]
    finally:
        for ref in in_flight:  # an interrupted run: drop the queued chunks (the actors go next)
            try:
                ray.cancel(ref, force=False)
            except Exception:  # noqa: BLE001  (cancelling is best effort; the actors are killed anyway)
                pass


def _crash_row(path: str, spec: ScoreSpec, problem: str) -> dict:
    """The error row of a file whose worker died (the driver's scorer gives model name and version)."""
    return _error_row(path, spec, _PROBES[spec], f"{path}: {problem}")
