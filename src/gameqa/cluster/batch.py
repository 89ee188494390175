"""Score thousands of files as a batch, on this machine or on a Ray cluster, with resumable output.

``batch_score(inputs, model, out, engine="local"|"ray")`` expands folders, globs and list/manifest
files, skips every file the output already holds a row for (so an interrupted run resumes without
scoring a finished file twice), and streams one row per file to ``out``:

* ``.jsonl``: each row is appended and flushed as it arrives; a torn last line from a killed run is cut
  off on resume.
* ``.parquet``: rows are appended to a journal beside it (``<out>.journal.jsonl``) as they arrive; when
  the run ends (or is interrupted with Ctrl-C) the Parquet file is written in one step with every row,
  and the journal removed. A run killed outright leaves the journal, which the next run picks up.

Both engines run the same function, ``score_chunk``, on chunks of files: the local engine in this
process (``workers=1``) or in a process pool, the Ray engine as Ray tasks (a local Ray by default, a
cluster when ``address`` is given; the files must then be readable at the same paths on every node).
"""
from __future__ import annotations

import csv
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from gameqa.errors import ConfigError, GameQAError

__all__ = ["BatchReport", "ScoreSpec", "batch_score", "score_chunk", "read_rows", "ENGINES"]

ENGINES = ("local", "ray")
OUT_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class ScoreSpec:
    """What every worker needs to build the same scorer."""

    model: str = "niqe"
    sample: str = "fps:2"
    batch_size: int = 8
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
    input_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def files_per_s(self) -> float:
        done = self.scored + self.failed
        return done / self.seconds if self.seconds > 0 else 0.0


# -- the work: one chunk of files -> rows --------------------------------------------------------------
_SCORERS: dict = {}


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
        self._fh = open(path, "a")

    def write(self, row: dict) -> None:
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()

    def close(self) -> None:
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
        rows = self._earlier + _read_jsonl_truncating(self._journal.path)
        _write_parquet(rows, self.path)
        os.unlink(self._journal.path)


def _read_jsonl_truncating(path: str) -> list[dict]:
    """Rows of a JSONL file; a torn or bad last line (a killed writer) is cut off the file."""
    if not os.path.exists(path):
        return []
    rows, good_end = [], 0
    with open(path, "rb") as fh:
        data = fh.read()
    pos = 0
    for line in data.splitlines(keepends=True):
        end = pos + len(line)
        if not line.endswith(b"\n"):
            break
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if end == len(data):
                break
            raise ConfigError(path, f"byte {pos}: not a JSON line; is this a gameqa batch output?") from None
        if isinstance(obj, dict):
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
    ])


def _write_parquet(rows: list[dict], path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    return _ParquetSink(out) if suffix == ".parquet" else _JsonlSink(out)


# -- the driver ----------------------------------------------------------------------------------------
def batch_score(
    inputs: Iterable[str],
    model: str = "niqe",
    out: str = "scores.jsonl",
    engine: str = "local",
    address: Optional[str] = None,
    sample: str = "fps:2",
    batch_size: int = 8,
    threads: int = 1,
    pooling: Optional[str] = None,
    per_frame: bool = True,
    workers: Optional[int] = None,
    chunk_size: int = 8,
    retry_failed: bool = False,
    on_row: Optional[Callable[[dict, int, int], None]] = None,
) -> BatchReport:
    """Score every input file not yet in ``out``; returns counts and time.

    ``engine="local"`` uses ``workers`` processes (default 1: this process); ``engine="ray"`` runs Ray
    tasks on a local Ray with ``workers`` CPUs (default: all) or on the cluster at ``address``.
    ``retry_failed`` scores again the files whose earlier row is an error. ``on_row(row, done, todo)``
    sees each new row."""
    if engine not in ENGINES:
        raise ConfigError(None, f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    from gameqa.scoring import Scorer

    probe = Scorer(model=model, sample=sample, batch_size=batch_size, threads=threads, pooling=pooling)
    if probe.card.weights is not None and (probe.card.weights.parent / "model.json").is_file():
        model = str(probe.card.weights.parent.resolve())  # worker processes find the model by its folder
    spec = ScoreSpec(model=model, sample=sample, batch_size=batch_size, threads=threads, pooling=pooling,
                     per_frame=per_frame)
    files, input_errors = expand_inputs(inputs)
    report = BatchReport(out=out, engine=engine, input_errors=input_errors)
    start = time.perf_counter()
    sink = _open_sink(out)
    try:
        finished = {r["path"] for r in sink.rows
                    if r.get("model") == probe.card.name and r.get("sample") == sample
                    and not (retry_failed and r.get("error"))}
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
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for fut in [pool.submit(warm_up, spec, 0.2) for _ in range(workers)]:
            fut.result()
        report.engine_start_s = time.perf_counter() - t0
        pending = set()
        queue = iter(chunks)
        try:
            for chunk in queue:
                pending.add(pool.submit(score_chunk, chunk, spec))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending.add(pool.submit(score_chunk, nxt, spec))
                    yield fut.result()
        finally:
            for fut in pending:
                fut.cancel()


def _run_ray(chunks, spec: ScoreSpec, workers, address, report: BatchReport) -> Iterator[list[dict]]:
    try:
        import ray
    except ImportError:
        raise ConfigError(None, "the ray engine needs Ray: pip install 'gameqa[cluster]'") from None
    t0 = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), **kwargs)
    remote = ray.remote(num_cpus=1, max_retries=2)(score_chunk)
    spec_ref = ray.put(spec)
    parallel = max(1, int(ray.available_resources().get("CPU", 1)))
    warm = ray.remote(num_cpus=1)(warm_up)
    ray.get([warm.remote(spec_ref, 0.2) for _ in range(min(parallel, max(1, len(chunks))))])
    report.engine_start_s = time.perf_counter() - t0
    queue = iter(chunks)
    pending = []
    try:
        for chunk in queue:
            pending.append(remote.remote(chunk, spec_ref))
            if len(pending) >= 2 * parallel:
                break
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            nxt = next(queue, None)
            if nxt is not None:
                pending.append(remote.remote(nxt, spec_ref))
            yield ray.get(ready[0])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
