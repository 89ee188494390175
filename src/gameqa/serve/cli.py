"""Command-line entry points for serving and batch scoring; ``gameqa.cli`` registers them:

    app.command("serve")(serve_command)
    app.command("batch")(batch_command)
    bench_app.command("service-load")(bench_service_load_command)
    bench_app.command("batch")(bench_batch_command)

``python -m gameqa.serve.cli --data-dir D`` also starts the service (the load benchmark uses it).
"""
from __future__ import annotations

from gameqa.media.policy import DEFAULT_BATCH
from gameqa.models.registry import DEFAULT_MODEL

import os
from pathlib import Path
from typing import List, Optional

import typer
from rich.text import Text

from gameqa.console import (BATCH_SIZE_HELP, MODEL_HELP, POOLING_HELP, SAMPLE_HELP, SERVER_LOG_LEVELS, check_choice,
                            console, counting_bar, fail as _fail)
from gameqa.errors import GameQAError, read_config_text
from gameqa.sinks import json_safe

err = console(stderr=True)
out = console()


def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    data_dir: Path = typer.Option(Path("gameqa-data"), "--data-dir", help="Folder for uploads and the job database."),
    db_url: Optional[str] = typer.Option(None, "--db-url", envvar="GAMEQA_DB_URL",
                                         help="SQLAlchemy URL (e.g. postgresql+psycopg://...); default SQLite in --data-dir."),
    storage_root: Optional[Path] = typer.Option(None, "--storage-root", help="Folder whose files clients may name for scoring."),
    api_key: List[str] = typer.Option([], "--api-key", help="Client key, KEY or NAME:KEY (repeatable)."),
    api_keys_file: Optional[Path] = typer.Option(None, "--api-keys-file", help="File with one KEY or NAME:KEY per line."),
    workers: int = typer.Option(1, "--workers", min=1, help="Scoring worker threads."),
    max_queued: int = typer.Option(32, "--max-queued", min=1, help="Most jobs waiting at once; more get 429."),
    max_upload_mb: float = typer.Option(256.0, "--max-upload-mb", min=0.001, help="Largest accepted upload, in MiB."),
    keep_uploads: bool = typer.Option(False, "--keep-uploads", help="Keep every uploaded file after its job."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Default model for jobs that name none."),
    on_restart: str = typer.Option("resume", "--on-restart", help="Unfinished jobs at start: resume or fail."),
    log_level: str = typer.Option("info", "--log-level", help="critical, error, warning, info, debug or trace."),
) -> None:
    """Run the scoring service (HTTP API, demo page at /, OpenAPI spec at /openapi.json)."""
    try:
        import uvicorn

        from gameqa.serve.app import ServeConfig, create_app, parse_api_keys
    except ImportError as exc:
        _fail(f"the service needs its extra: pip install 'gameqa[serve]' ({exc.name} is missing)")
    check_choice("--log-level", log_level, SERVER_LOG_LEVELS)
    if on_restart not in ("resume", "fail"):
        _fail(f"--on-restart must be resume or fail, not {on_restart!r}", 2)
    key_lines = list(api_key) + [k for k in os.environ.get("GAMEQA_API_KEYS", "").split(",") if k.strip()]
    try:
        if api_keys_file is not None:
            key_lines += read_config_text(api_keys_file, "API key file").splitlines()
        keys = parse_api_keys(key_lines)
        config = ServeConfig(data_dir=data_dir, db_url=db_url, storage_root=storage_root, api_keys=keys,
                             workers=workers, max_queued=max_queued, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                             keep_uploads=keep_uploads, default_model=model, on_restart=on_restart)
        app = create_app(config)
    except GameQAError as exc:
        _fail(str(exc), 2)
    except OSError as exc:
        _fail(f"{exc.filename}: {exc.strerror}", 2)
    if not keys and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(Text.assemble(("warning:", "yellow"), " no API key set and listening beyond this machine: "
                                "anyone who reaches it can submit jobs (use --api-key)"), highlight=False)
    _service_logging(log_level)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=15)


def _service_logging(level: str) -> None:
    """The service's own messages (jobs resumed after a restart, errors) at --log-level, beside uvicorn's."""
    import logging

    logger = logging.getLogger("gameqa.serve")
    logger.setLevel("DEBUG" if level == "trace" else level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-9s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def batch_command(
    inputs: List[str] = typer.Argument(..., help="Files, folders, globs, list files (.txt/@FILE) or manifests (.csv/.jsonl with a path column)."),
    out_file: str = typer.Option(..., "--out", "-o", help="Results file: .jsonl or .parquet (resumed if it exists)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
    sample: str = typer.Option("fps:2", "--sample", "-s", help=SAMPLE_HELP),
    engine: str = typer.Option("local", "--engine", help="local (processes on this machine) or ray."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: start a local Ray)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes (local, default 1) or CPUs (local Ray)."),
    chunk_size: int = typer.Option(8, "--chunk-size", help="Files per task."),
    batch_size: int = typer.Option(DEFAULT_BATCH, "--batch-size", min=1, help=BATCH_SIZE_HELP),
    pooling: Optional[str] = typer.Option(None, "--pooling", help=POOLING_HELP),
    per_frame: bool = typer.Option(True, "--per-frame/--no-per-frame", help="Keep per-frame scores in the rows."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Score again files that failed before."),
) -> None:
    """Score many files (thousands) locally or on Ray; results stream to the file and a rerun resumes."""
    run_batch(inputs, model=model, out_file=out_file, engine=engine, address=address, workers=workers,
              sample=sample, chunk_size=chunk_size, batch_size=batch_size, pooling=pooling, per_frame=per_frame,
              retry_failed=retry_failed)


def run_batch(inputs, model, out_file, engine="local", address=None, workers=None, sample="fps:2", chunk_size=8,
              batch_size=DEFAULT_BATCH, pooling=None, per_frame=True, retry_failed=False, threads=1) -> None:
    """The batch run with a progress bar and a summary; ``gameqa score --engine ray`` calls this too."""
    from gameqa.cluster.batch import batch_score

    failure = None
    with counting_bar("scoring") as update:
        try:
            report = batch_score(inputs, model=model, out=out_file, engine=engine, address=address, sample=sample,
                                 batch_size=batch_size, threads=threads, pooling=pooling, per_frame=per_frame,
                                 workers=workers, chunk_size=chunk_size, retry_failed=retry_failed,
                                 on_row=lambda _row, done, todo: update(done, todo))
        except GameQAError as exc:
            failure = str(exc)  # said once the progress bar is gone
        except KeyboardInterrupt:
            err.print(f"interrupted: finished rows are in {out_file}; run the same command again to resume")
            raise typer.Exit(130)
    if failure is not None:
        _fail(failure, 2)
    started = f", start-up {report.engine_start_s:.1f} s" if report.engine_start_s else ""
    err.print(f"{report.scored} scored, {report.failed} failed, {report.skipped} already in {out_file} "
              f"({report.total} files, {report.seconds:.1f} s, engine {report.engine}{started})", highlight=False)
    problems = report.input_errors + report.failures
    if report.earlier_failures:  # a rerun that skipped them must not read as a clean run
        err.print(f"{len(report.earlier_failures)} of the files already in {out_file} failed in an earlier run "
                  "(--retry-failed scores them again):", highlight=False)
        problems += report.earlier_failures
    for line in problems[:20]:
        err.print(f"  {line}", highlight=False, soft_wrap=True)
    if len(problems) > 20:
        err.print(f"  ... and {len(problems) - 20} more (rows with an error field in {out_file})")
    if problems:
        raise typer.Exit(1)


def bench_service_load_command(
    clients: int = typer.Option(50, "--clients", min=1, help="Concurrent clients."),
    seconds: float = typer.Option(60.0, "--seconds", min=0.1, help="How long clients keep submitting."),
    workers: int = typer.Option(2, "--workers", min=1, help="Service worker threads."),
    max_queued: int = typer.Option(64, "--max-queued", min=1, help="Most jobs waiting at once; more get 429."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model the clients' jobs use."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of tables."),
) -> None:
    """Load test on loopback: N clients upload short clips and images for S seconds, then report."""
    from gameqa.bench.service_load import print_load_report, run_load_test

    report = _bench_report(lambda: run_load_test(clients=clients, seconds=seconds, workers=workers,
                                                 max_queued=max_queued, model=model), as_json, print_load_report)
    if not report["ok"]:
        raise typer.Exit(1)


def bench_batch_command(
    clips: int = typer.Option(500, "--clips", min=1, help="How many short clips."),
    workers: int = typer.Option(2, "--workers", min=1, help="Processes (local pool) and CPUs (Ray)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
    sample: str = typer.Option("fps:2", "--sample", "-s", help=SAMPLE_HELP),
    chunk_size: int = typer.Option(8, "--chunk-size", min=1, help="Files per task."),
    width: int = typer.Option(640, "--width", min=16, help="Even (H.264 4:2:0)."),
    height: int = typer.Option(360, "--height", min=16, help="Even (H.264 4:2:0)."),
    seconds: float = typer.Option(2.0, "--seconds", min=0.1, help="Length of each clip."),
    source: Optional[Path] = typer.Option(None, "--source", help="Video or folder of videos to cut clips from (default: the bundled gameplay capture)."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Tiny generated pattern clips instead of gameplay."),
    clip_dir: Optional[Path] = typer.Option(None, "--clip-dir", help="Keep the clips here (and reuse them next time)."),
    engines: str = typer.Option(",".join(("local-1", "local", "ray")), "--engines", help="Comma list of local-1 (plain local batch), local (process pool), ray."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON instead of a table."),
) -> None:
    """Ray vs local batch scoring of the same short clips: whole-job time, start-up, identical scores."""
    from gameqa.bench.batch import BENCH_ENGINES, bench_batch, print_batch_table

    if width % 2 or height % 2:
        _fail(f"--width and --height must be even (H.264 4:2:0), not {width}x{height}", 2)
    chosen = [e.strip() for e in engines.split(",") if e.strip()]
    unknown = [e for e in chosen if e not in BENCH_ENGINES]
    if unknown or not chosen:
        _fail(f"--engines takes a comma list of {', '.join(BENCH_ENGINES)}, not {engines!r}", 2)
    def said(row: dict) -> None:
        err.print(f"{row['engine']}: {row['wall_s']:.1f} s" + (f" ({row['error']})" if "error" in row else
                  f", {row['scored']} scored, {row['failed']} failed, start-up {row['start_s']:.1f} s"), highlight=False)

    _bench_report(lambda: bench_batch(clips=clips, workers=workers, model=model, sample=sample, chunk_size=chunk_size,
                                      size=(width, height), seconds=seconds,
                                      source=None if source is None else str(source), synthetic=synthetic,
                                      folder=None if clip_dir is None else str(clip_dir), engines=chosen,
                                      progress=said),
                  as_json, print_batch_table)


def _bench_report(run, as_json: bool, print_table) -> dict:
    """Run a benchmark (``run()``), then print its report as JSON or as ``print_table`` draws it; a GameQAError
    is one line and exit 1."""
    import json

    try:
        report = run()
    except GameQAError as exc:
        _fail(str(exc))
    if as_json:
        out.print_json(json.dumps(json_safe(report), allow_nan=False))
    else:
        print_table(report, console=out)
    return report


if __name__ == "__main__":
    typer.run(serve_command)
