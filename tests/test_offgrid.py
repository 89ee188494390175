"""`gameqa corpus offgrid`: a corpus split's sources encoded outside the ladder (constant quality), with real
encoders and libvmaf labels, written as a manifest that `gameqa eval` reads."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

import clipgen
from gameqa.cli import app
from gameqa.data.labels import vmaf_to_mos
from gameqa.data.manifest import read_manifest, write_manifest
from gameqa.data.offgrid import build_offgrid, load_grid
from gameqa.errors import ConfigError
from tinycorpus import manifest_row

GRID = """
seconds = 1.0
[[setting]]
name = "x264-crf"
codec = "h264"
encoder = "libx264"
args = ["-preset", "medium"]
quality = ["-crf", "{q}"]
values = [16, 30, 46]
heights = [180]
gop_seconds = 0.5
[[setting]]
name = "vp9-crf"
codec = "vp9"
encoder = "libvpx-vp9"
args = ["-deadline", "good", "-cpu-used", "8", "-b:v", "0"]
quality = ["-crf", "{q}"]
values = [50]
heights = [90]
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two test sources and one train source, each with one ladder clip in the manifest."""
    root = tmp_path_factory.mktemp("offgrid-corpus")
    for folder in ("sources/alpha", "sources/beta", "sources/gamma", "clips", "manifests"):
        (root / folder).mkdir(parents=True)
    rows = []
    for k, (game, lavfi, split) in enumerate((("alpha", "testsrc2", "test"), ("beta", "mandelbrot", "test"),
                                              ("gamma", "testsrc", "train"))):
        src = clipgen.make_clip(root / "sources" / game / "s.mkv", codec="libx264", size=(320, 180), fps=25,
                                seconds=1.2, source=lavfi, extra=["-crf", "0"])
        clip = clipgen.make_clip(root / "clips" / f"{game}.mkv", codec="libx264", size=(320, 180), fps=25,
                                 seconds=1.0, source=lavfi, extra=["-b:v", "100k"])
        row = manifest_row(root, 0, game, ("ladder", 320, 180, 0, 3.0), clip, src)
        row.update(clip_id=f"{game}-ladder", source_id=f"src-{game}", content=f"{game}--s", display_width=320,
                   display_height=180, split=split)
        rows.append(row)
    write_manifest(rows, root / "manifests" / "corpus.csv")
    (root / "grid.toml").write_text(GRID)
    return root


def test_every_test_source_gets_every_encode_labelled_in_the_test_split(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("offgrid")
    path, rows, failures = build_offgrid(corpus / "manifests" / "corpus.csv", out, load_grid(corpus / "grid.toml"),
                                         log=lambda m: None)
    assert failures == []
    assert len(rows) == 2 * (3 + 1)  # the two test sources (not the train one) x every encode
    back = read_manifest(path, root=out, check_files=True)
    assert {r["game"] for r in back} == {"alpha", "beta"} and {r["split"] for r in back} == {"test"}
    for r in back:
        assert r["mos"] == pytest.approx(float(vmaf_to_mos(r["vmaf"])), abs=1e-4) and r["frames"] == 25
        assert (out / r["source_path"]).is_file() and r["display_height"] == 180
    for game in ("alpha", "beta"):
        x264 = sorted((r for r in back if r["game"] == game and r["codec"] == "h264"),
                      key=lambda r: int(r["encoder_args"].split()[-1]))
        assert [r["encoder_args"].split()[-2:] for r in x264] == [["-crf", "16"], ["-crf", "30"], ["-crf", "46"]]
        assert x264[0]["vmaf"] > x264[1]["vmaf"] > x264[2]["vmaf"]  # a higher CRF looks worse
        assert x264[0]["actual_kbps"] > x264[2]["actual_kbps"] and x264[0]["height"] == 180
        vp9 = [r for r in back if r["game"] == game and r["codec"] == "vp9"]
        assert len(vp9) == 1 and vp9[0]["height"] == 90 and vp9[0]["path"].endswith(".webm")
    # resumable: a second build encodes nothing again
    stamps = {r["path"]: (out / r["path"]).stat().st_mtime_ns for r in back}
    _, again, failures = build_offgrid(corpus / "manifests" / "corpus.csv", out, load_grid(corpus / "grid.toml"),
                                       log=lambda m: None)
    assert failures == [] and len(again) == len(rows)
    assert all((out / p).stat().st_mtime_ns == t for p, t in stamps.items())


def test_an_encoder_failure_is_reported_and_the_other_clips_are_built(corpus, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.replace('values = [50]', 'values = [500]'))  # libvpx-vp9 takes a CRF of 0-63 only
    path, rows, failures = build_offgrid(corpus / "manifests" / "corpus.csv", tmp_path / "out", load_grid(grid),
                                         log=lambda m: None)
    assert len(rows) == 6 and len(failures) == 2
    assert all("[vp9-crf_90p_q500]" in f and "s.mkv" in f for f in failures)
    assert not list((tmp_path / "out").glob("clips/*/vp9-crf*")) and not list((tmp_path / "out").glob("clips/*/.*"))
    assert len(read_manifest(path)) == 6


@pytest.mark.parametrize("change, problem", [
    (('values = [50]', 'values = [50]\nbitrate = 3'), "unknown key(s) ['bitrate']"),
    (('quality = ["-crf", "{q}"]\nvalues = [50]', 'quality = ["-crf", "30"]\nvalues = [50]'), "must hold {q}"),
    (('heights = [90]', 'heights = []'), "'heights' must be a list"),
    (('name = "vp9-crf"', 'name = "x264-crf"'), "must be unique"),
])
def test_grid_mistakes_are_one_line_errors_naming_the_file(tmp_path, change, problem):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_grid(grid)
    assert problem in str(info.value) and str(grid) in str(info.value) and "\n" not in str(info.value)


def test_cli_bad_grid_stops_before_writing_anything(corpus, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("seconds = 1.0\n")
    result = CliRunner().invoke(app, ["corpus", "offgrid", "--manifest", str(corpus / "manifests" / "corpus.csv"),
                                      "--out", str(tmp_path / "out"), "--grid", str(grid)])
    assert result.exit_code == 1 and "no [[setting]] tables" in result.output
    assert not (tmp_path / "out").exists()


def test_the_bundled_grid_reads():
    grid = load_grid("configs/corpus/offgrid.toml")
    assert {s.codec for s in grid.settings} == {"h264", "hevc", "vp9", "av1"} and grid.seconds == 5.0
