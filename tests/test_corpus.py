"""Corpus build end to end on a tiny corpus: two generated sources, two codecs, real encoders and libvmaf."""
from __future__ import annotations

import json

import numpy as np
import pytest

import clipgen
from gameqa.data.corpus import build_corpus, clip_paths, find_sources
from gameqa.data.ladder import load_ladder
from gameqa.data.labels import vmaf_to_mos
from gameqa.data.manifest import assign_splits, logo_split, read_manifest, write_manifest
from gameqa.data.stats import corpus_stats, plot_stats
from gameqa.errors import ConfigError
from gameqa.models.classical import psnr

LADDER = """
seconds = 1.0
codecs_per_source = 2
[[codec]]
name = "h264"
encoder = "libx264"
args = ["-preset", "veryfast"]
[[codec]]
name = "vp9"
encoder = "libvpx-vp9"
args = ["-deadline", "realtime", "-cpu-used", "8"]
[[rung]]
height = 180
kbps = 60
[[rung]]
height = 180
kbps = 600
[[rung]]
height = 90
kbps = 150
"""


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for game, source in (("alpha", "testsrc2"), ("beta", "mandelbrot")):
        (root / "sources" / game).mkdir(parents=True)
        clipgen.make_clip(root / "sources" / game / "s1.mkv", codec="libx264", size=(320, 180), fps=25,
                          seconds=1.2, source=source, extra=["-crf", "0"])
    # a source shorter than the ladder asks for: reported and skipped
    clipgen.make_clip(root / "sources" / "beta" / "short.mkv", codec="libx264", size=(320, 180), fps=25,
                      seconds=0.4, extra=["-crf", "0"])
    (root / "ladder.toml").write_text(LADDER)
    warnings: list[str] = []
    rows, failures = build_corpus(root, load_ladder(root / "ladder.toml"), natural=False, warn=warnings.append)
    return root, rows, failures, warnings


def test_builds_every_clip_with_labels(tiny_corpus):
    root, rows, failures, warnings = tiny_corpus
    assert failures == []
    assert len(rows) == 2 * 2 * 3  # sources x codecs x rungs
    assert any("short.mkv" in w and "shorter" in w for w in warnings)
    for r in rows:
        assert (root / r["path"]).is_file()
        assert 1.0 <= r["mos"] <= 5.0 and r["mos"] == pytest.approx(float(vmaf_to_mos(r["vmaf"])))
        assert r["frames"] == 25 and r["display_width"] == 320
    assert {r["height"] for r in rows} == {180, 90}
    # VMAF rises with bitrate in every (source, codec) ladder at 180p
    s = corpus_stats(rows)
    assert s["ladders_checked"] == 4 and s["monotonic_share"] == 1.0


def test_libvmaf_psnr_agrees_with_ours(tiny_corpus):
    root, rows, _, _ = tiny_corpus
    row = next(r for r in rows if r["height"] == 180 and r["codec"] == "h264" and r["kbps"] == 60)
    labels = json.loads((root / row["path"]).with_suffix(".json").read_text())
    picks = (4, 12, 20)
    dist, ref = _luma_planes(root / row["path"], picks), _luma_planes(root / row["source_path"], picks)
    ours = [psnr(d, r) for d, r in zip(dist, ref)]  # an HxW uint8 array is taken as luma as it is
    theirs = [labels["per_frame"]["psnr_y"][i] for i in picks]
    np.testing.assert_allclose(ours, theirs, atol=0.01)


def _luma_planes(path, picks):
    """The decoded Y planes of frames ``picks`` (what libvmaf compares), read with PyAV."""
    import av

    with av.open(str(path)) as container:
        out = []
        for i, frame in enumerate(container.decode(video=0)):
            if i in picks:  # the raw plane, not a gray conversion (that would stretch 16-235 to 0-255)
                plane = frame.planes[0]
                rows = np.frombuffer(bytes(plane), np.uint8).reshape(frame.height, plane.line_size)
                out.append(rows[:, : frame.width].copy())
        return out


def test_resume_reuses_finished_clips(tiny_corpus):
    root, rows, _, _ = tiny_corpus
    stamps = {r["path"]: (root / r["path"]).stat().st_mtime_ns for r in rows}
    again, failures = build_corpus(root, load_ladder(root / "ladder.toml"), natural=False, warn=lambda m: None)
    assert failures == [] and len(again) == len(rows)
    assert all((root / p).stat().st_mtime_ns == t for p, t in stamps.items())


def test_missing_encoder_is_reported_and_others_go_on(tiny_corpus, tmp_path):
    root, _, _, _ = tiny_corpus
    ladder = tmp_path / "ladder.toml"
    ladder.write_text(LADDER.replace('encoder = "libvpx-vp9"', 'encoder = "libnothere"'))
    spec = load_ladder(ladder)
    rows, failures = build_corpus(root, spec, natural=False, warn=lambda m: None)
    assert len(rows) == 6 and len(failures) == 6
    assert all("libnothere is missing" in f for f in failures)
    sources = find_sources(root / "sources", spec.seconds, lambda m: None)
    missing = [s for src in sources for s in spec.specs_for(src.source_id) if s.codec.encoder == "libnothere"]
    assert len(missing) == 6
    for src in sources:  # nothing half-written: neither clip nor labels
        for s in spec.specs_for(src.source_id):
            if s.codec.encoder == "libnothere":
                assert not any(p.exists() for p in clip_paths(root, src, s))
    assert not list(root.glob("clips/*/.enc-*")) and not list(root.glob("clips/*/.labels-*"))


def test_manifest_round_trip_and_splits(tiny_corpus, tmp_path):
    root, rows, _, _ = tiny_corpus
    splits = assign_splits({"g": [f"s{i}" for i in range(20)]})
    assert sorted(splits.values()).count("test") == 3 and sorted(splits.values()).count("val") == 3
    assert assign_splits({"g": [f"s{i}" for i in range(20)]}) == splits  # fixed
    for r in rows:
        r["split"] = "test" if r["game"] == "beta" else "train"
    path = write_manifest(rows, tmp_path / "m.csv")
    back = read_manifest(path, root=root, check_files=True)
    assert len(back) == len(rows) and {r["game"] for r in back} == {"alpha", "beta"}
    held = logo_split(back, "alpha")
    assert {r["game"] for r in held["test"]} == {"alpha"} and {r["game"] for r in held["train"]} == {"beta"}
    assert plot_stats(back, tmp_path / "stats.png").stat().st_size > 10_000


def test_manifest_errors(tmp_path, tiny_corpus):
    root, rows, _, _ = tiny_corpus
    for r in rows:
        r["split"] = "train"
    path = write_manifest(rows, tmp_path / "m.csv")
    text = path.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    header = text[0].split(",")
    cells = text[1].split(",")
    cells[header.index("mos")] = "7.5"
    bad.write_text("\n".join([text[0], ",".join(cells)]) + "\n")
    with pytest.raises(ConfigError, match="line 2: mos 7.5 is outside 1-5"):
        read_manifest(bad)
    (root / rows[0]["path"]).rename(root / (rows[0]["path"] + ".moved"))
    try:
        with pytest.raises(ConfigError, match="is missing"):
            read_manifest(path, root=root, check_files=True)
    finally:
        (root / (rows[0]["path"] + ".moved")).rename(root / rows[0]["path"])


def test_ladder_config_errors(tmp_path):
    cfg = tmp_path / "l.toml"
    cfg.write_text(LADDER + "\ncolour = 3\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_ladder(cfg)
    cfg.write_text(LADDER.replace("kbps = 60\n", "kbps = \"fast\"\n"))
    with pytest.raises(ConfigError, match="must be a positive number"):
        load_ladder(cfg)
    cfg.write_text("seconds = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_ladder(cfg)
    for value in ("0.5", "0", "true"):  # 0.5 used to become 0 codecs: a build of no clips that exited 0
        cfg.write_text(LADDER.replace("codecs_per_source = 2", f"codecs_per_source = {value}"))
        with pytest.raises(ConfigError, match="codecs_per_source must be a whole number >= 1"):
            load_ladder(cfg)


def test_capture_segments_share_their_session_content(tmp_path):
    from gameqa.data.corpus import source_game_content

    root = tmp_path / "sources"
    assert source_game_content(root, root / "wesnoth--basilisk-caves--03.mkv") == ("wesnoth", "wesnoth--basilisk-caves")
    assert source_game_content(root, root / "natural" / "bikes.mp4") == ("natural", "natural--bikes")
    contents = [f"pingus--level{i}" for i in range(10)]
    splits = assign_splits({"pingus": contents + contents})  # two segments per session: one split per session
    assert set(splits) == set(contents) and set(splits.values()) == {"train", "val", "test"}


def test_encoder_error_names_the_cause(tiny_corpus, tmp_path):
    root, _, _, _ = tiny_corpus
    ladder = tmp_path / "ladder.toml"
    ladder.write_text(LADDER.replace('args = ["-preset", "veryfast"]', 'args = ["-preset", "no-such-preset"]'))
    rows, failures = build_corpus(root, load_ladder(ladder), natural=False, warn=lambda m: None)
    assert len(failures) == 6 and all("ffmpeg failed:" in f and "preset" in f.lower() for f in failures)


def test_rate_control_comes_from_the_config():
    from gameqa.data.ladder import DEFAULT_RATE_ARGS, Codec

    assert Codec("x", "libx264").rate_control(300) == ["-b:v", "300k", "-maxrate", "300k", "-bufsize", "600k"]
    assert Codec("a", "libsvtav1", rate_args=("-b:v", "{kbps}k")).rate_control(150) == ["-b:v", "150k"]
    assert len(DEFAULT_RATE_ARGS) == 6


def test_merge_links_two_corpora_into_one_manifest(tiny_corpus, tmp_path):
    from typer.testing import CliRunner

    from gameqa.cli import app
    from gameqa.data.merge import merge_corpora

    root, rows, _, _ = tiny_corpus
    splits = assign_splits({"alpha": ["alpha"], "beta": ["beta"]})
    write_manifest([dict(r, split=splits.get(r["game"], "train")) for r in rows], root / "manifests" / "corpus.csv")
    other = tmp_path / "candidates"
    (other / "sources" / "gamma").mkdir(parents=True)
    clipgen.make_clip(other / "sources" / "gamma" / "s1.mkv", codec="libx264", size=(320, 180), fps=25,
                      seconds=1.2, source="rgbtestsrc", extra=["-crf", "0"])
    ladder = tmp_path / "ladder.toml"
    ladder.write_text(LADDER.replace("codecs_per_source = 2", "codecs_per_source = 1"))
    new_rows, failures = build_corpus(other, load_ladder(ladder), natural=False, warn=lambda m: None)
    assert failures == [] and len(new_rows) == 3
    write_manifest([dict(r, split="test") for r in new_rows], other / "manifests" / "corpus.csv")

    merged = tmp_path / "merged"
    manifest, n = merge_corpora([root, other], merged)
    back = read_manifest(manifest, root=merged, check_files=True)  # every clip reachable through the links
    assert n == len(back) == len(rows) + 3 and {r["game"] for r in back} == {"alpha", "beta", "gamma"}
    assert all((merged / "clips" / r["source_id"]).is_symlink() for r in back)
    assert {r["clip_id"]: r["split"] for r in back if r["game"] == "gamma"} == {r["clip_id"]: "test" for r in new_rows}
    assert logo_split(back, "gamma")["test"] and len(logo_split(back, "gamma")["test"]) == 3
    assert merge_corpora([root, other], merged)[1] == n  # again: the same links are kept

    # the same clips twice: an error naming both manifests, nothing written
    with pytest.raises(ConfigError, match=r"clip .* is also in .*corpus\.csv"):
        merge_corpora([root, root], tmp_path / "twice")
    assert not (tmp_path / "twice").exists()
    result = CliRunner().invoke(app, ["corpus", "merge", str(root), str(tmp_path / "nothing"), "--out",
                                      str(tmp_path / "m2")])
    assert result.exit_code == 1 and "no manifest here" in result.output and "nothing" in result.output
    assert not (tmp_path / "m2").exists()
    # a source file gone from an input: named, and no merged folder with a dangling link
    source = other / "sources" / "gamma" / "s1.mkv"
    source.rename(source.with_suffix(".bak"))
    try:
        with pytest.raises(ConfigError, match=r"source file .*s1\.mkv of clip .* is missing"):
            merge_corpora([root, other], tmp_path / "m3")
        assert not (tmp_path / "m3").exists()
    finally:
        source.with_suffix(".bak").rename(source)


def test_a_source_keeps_its_codecs_when_sources_are_added(tiny_corpus, tmp_path):
    """The codecs of a source depend on it alone (a hash of its id) or on the manifest being rebuilt, never on
    its place among the other sources: adding a game does not re-encode the old ones."""
    import shutil

    root, _, _, _ = tiny_corpus
    ladder = tmp_path / "ladder.toml"
    ladder.write_text(LADDER.replace("codecs_per_source = 2", "codecs_per_source = 1"))
    spec = load_ladder(ladder)
    copy = tmp_path / "corpus"
    shutil.copytree(root / "sources", copy / "sources")
    shutil.copytree(root / "clips", copy / "clips")  # both codecs of every source are built there already
    before, failures = build_corpus(copy, spec, natural=False, warn=lambda m: None)
    assert failures == [] and len(before) == 2 * 3
    ids = [f"{i:012x}" for i in range(64)]
    assert {spec.codecs_for(i)[0].name for i in ids} == {"h264", "vp9"}  # the hash spreads sources over codecs
    (copy / "sources" / "aaa").mkdir()  # a game that sorts first: it used to shift every other source's codecs
    clipgen.make_clip(copy / "sources" / "aaa" / "s1.mkv", codec="libx264", size=(320, 180), fps=25,
                      seconds=1.2, source="rgbtestsrc", extra=["-crf", "0"])
    after, failures = build_corpus(copy, spec, natural=False, warn=lambda m: None)
    assert failures == [] and len(after) == 3 * 3
    assert {r["clip_id"] for r in before} == {r["clip_id"] for r in after if r["game"] != "aaa"}
    # a manifest being rebuilt wins: each source keeps the codec it lists, here the other one
    other = {"h264": "vp9", "vp9": "h264"}
    previous = [dict(r, codec=other[r["codec"]]) for r in before]
    rebuilt, failures = build_corpus(copy, spec, natural=False, warn=lambda m: None, previous=previous)
    assert failures == [] and {(r["source_id"], r["codec"]) for r in rebuilt if r["game"] != "aaa"} == \
        {(r["source_id"], r["codec"]) for r in previous}


def _one_game_corpus(tiny_corpus, tmp_path):
    """The tiny corpus's clips as one game, ``alpha``, whose two contents are both in the train split."""
    root, rows, _, _ = tiny_corpus
    corpus = tmp_path / "corpus"
    (corpus / "manifests").mkdir(parents=True)
    for name in ("clips", "sources"):
        (corpus / name).symlink_to(root / name)
    write_manifest([dict(r, game="alpha", content=f"alpha--{r['game']}", split="train") for r in rows],
                   corpus / "manifests" / "corpus.csv")
    return corpus


def test_soften_makes_soft_train_sources_labelled_against_themselves(tiny_corpus, tmp_path):
    """Each train content gets a soft source (blur, then half resolution, in turn) that goes through the ladder
    like any source: its clips are labelled against the soft source and all sit in the train split."""
    import av
    from typer.testing import CliRunner

    from gameqa.cli import app
    from gameqa.data.soften import soften_corpus

    root, rows, _, _ = tiny_corpus
    corpus = _one_game_corpus(tiny_corpus, tmp_path)  # two train contents: they take the two softenings in turn
    soft = tmp_path / "soft"
    manifest, soft_rows, failures = soften_corpus(corpus, soft, load_ladder(root / "ladder.toml"), log=lambda m: None)
    assert failures == [] and len(soft_rows) == 2 * 2 * 3
    assert {r["content"] for r in soft_rows} == {"alpha--alpha-softblur", "alpha--beta-softhalf"}
    assert {(r["split"], r["group"]) for r in read_manifest(manifest)} == {("train", "soft")}
    for r in soft_rows:
        assert r["source_path"].startswith("sources/") and "-soft" in r["source_path"] and 1.0 <= r["mos"] <= 5.0
    # held out, a game's soft clips are in no split; another game's train on
    originals = read_manifest(corpus / "manifests" / "corpus.csv")
    both = originals + [dict(r, game="beta") if "softhalf" in r["content"] else r for r in read_manifest(manifest)]
    held = logo_split(both, "alpha")
    assert {r["content"] for r in held["test"]} == {"alpha--alpha", "alpha--beta"} and held["val"] == []
    assert {r["content"] for r in held["train"]} == {"alpha--beta-softhalf"}

    def detail(path):  # mean absolute horizontal luma step of the first frame
        with av.open(str(path)) as c:
            y = next(c.decode(video=0)).to_ndarray(format="gray").astype(float)
        return float(np.abs(np.diff(y, axis=1)).mean())

    for game, kind in (("alpha", "blur"), ("beta", "half")):
        original = detail(root / "sources" / game / "s1.mkv")
        softened = detail(soft / "sources" / f"alpha--{game}-soft{kind}--00.mkv")
        assert softened < 0.8 * original, (game, softened, original)

    # a held-out game is left out; errors name the manifest and change nothing
    with pytest.raises(ConfigError, match="no game 'gamma' to leave out"):
        soften_corpus(corpus, tmp_path / "x", load_ladder(root / "ladder.toml"), exclude_games=["gamma"])
    with pytest.raises(ConfigError, match="no train contents to soften"):
        soften_corpus(corpus, tmp_path / "x", load_ladder(root / "ladder.toml"), exclude_games=["alpha"])
    assert not (tmp_path / "x").exists()
    result = CliRunner().invoke(app, ["corpus", "soften", "--from", str(tmp_path / "nothing"), "--out",
                                      str(tmp_path / "y")])
    assert result.exit_code == 1 and "no manifest here" in result.output and not (tmp_path / "y").exists()


def test_block_edge_ratio_on_hand_made_planes():
    """Steps of 4 on every 8th column boundary and of 1 elsewhere: horizontal ratio 4, vertical 1 (no steps: 1)."""
    from gameqa.data.stats import block_edge_ratio

    cols = np.arange(32)
    row = np.cumsum(np.where((cols % 8 == 0) & (cols > 0), 4.0, 1.0))  # columns 7->8, 15->16, 23->24 step by 4
    plane = np.tile(row, (16, 1)) + np.arange(16)[:, None]  # vertical steps all 1
    # horizontal: the 3 grid steps are 4, the 28 others 1 -> ratio 4; vertical: all steps 1 -> ratio 1
    assert block_edge_ratio(plane) == pytest.approx((4.0 + 1.0) / 2)
    assert block_edge_ratio(np.full((16, 16), 7.0)) == 1.0
    with pytest.raises(ValueError, match="2-D luma plane"):
        block_edge_ratio(np.zeros((4, 4)))


def test_soften_jpeg_kind_puts_8x8_block_edges_into_the_source(tiny_corpus, tmp_path):
    """``kinds=["jpeg"]``: the soft source is the frame after a JPEG round trip, so pixel steps across the 8x8 block
    edges grow against the steps inside blocks (Pingus' JPEG backgrounds show the same); unknown kinds are refused."""
    import av
    from typer.testing import CliRunner

    from gameqa.cli import app
    from gameqa.data.soften import check_kinds, soften_sources
    from gameqa.data.stats import block_edge_ratio, source_block_edges

    root, rows, _, _ = tiny_corpus
    corpus = _one_game_corpus(tiny_corpus, tmp_path)
    soft = tmp_path / "soft"
    soften_sources(corpus, soft, 1.0, kinds=["jpeg"], log=lambda m: None)
    assert sorted(p.name for p in (soft / "sources").iterdir()) == ["alpha--alpha-softjpeg--00.mkv",
                                                                    "alpha--beta-softjpeg--00.mkv"]

    def ratio(path):
        with av.open(str(path)) as c:
            return np.mean([block_edge_ratio(f.to_ndarray(format="gray"))
                            for _, f in zip(range(5), c.decode(video=0))])

    # the smooth mandelbrot source (testsrc2's own pattern is drawn on an 8-pixel grid)
    original = ratio(root / "sources" / "beta" / "s1.mkv")
    softened = ratio(soft / "sources" / "alpha--beta-softjpeg--00.mkv")
    assert softened > 1.1 * original, (softened, original)
    # the corpus command measures each content's first source: the JPEG-softened one stands out
    soft_manifest = write_manifest(
        [dict(rows[0], clip_id="plain", content="c--plain", source_path="sources/beta/s1.mkv", game="beta"),
         dict(rows[0], clip_id="jpeg", content="c--jpeg", source_path="sources/alpha--beta-softjpeg--00.mkv",
              game="beta")],
        tmp_path / "manifests" / "corpus.csv")
    for name in ("beta", "alpha--beta-softjpeg--00.mkv"):
        (tmp_path / "sources").mkdir(exist_ok=True)
        (tmp_path / "sources" / name).symlink_to(root / "sources" / name if name == "beta"
                                                 else soft / "sources" / name)
    found = {f["content"]: f["block_edge_ratio"]
             for f in source_block_edges(read_manifest(soft_manifest, root=tmp_path))}
    assert found["c--jpeg"] > 1.1 * found["c--plain"], found
    result = CliRunner().invoke(app, ["corpus", "blocks", str(soft_manifest), "--json"])
    assert result.exit_code == 0 and {f["content"] for f in json.loads(result.output)} == {"c--plain", "c--jpeg"}
    # straight from a sources/ folder, before any manifest: one row per content, the same ratios
    result = CliRunner().invoke(app, ["corpus", "blocks", "--sources", str(soft / "sources"), "--json"])
    assert result.exit_code == 0, result.output
    direct = {f["content"]: f["block_edge_ratio"] for f in json.loads(result.output)}
    assert direct["alpha--beta-softjpeg"] == pytest.approx(found["c--jpeg"]) and len(direct) == 2
    result = CliRunner().invoke(app, ["corpus", "blocks", "--sources", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no source files" in result.output
    (tmp_path / "sources" / "beta").unlink()  # a source gone: named, the other measured, exit 1
    result = CliRunner().invoke(app, ["corpus", "blocks", str(soft_manifest)])
    assert result.exit_code == 1 and "c--jpeg" in result.output and "s1.mkv" in result.output

    with pytest.raises(ConfigError, match="unknown softening 'sharp'"):
        check_kinds(["blur", "sharp"])
    with pytest.raises(ConfigError, match="named once each"):
        check_kinds(["blur", "blur"])
    result = CliRunner().invoke(app, ["corpus", "soften", "--from", str(corpus), "--out", str(tmp_path / "y"),
                                      "--kinds", "blur,sharp"])
    assert result.exit_code == 1 and "unknown softening 'sharp'" in result.output and not (tmp_path / "y").exists()


def test_plus_folders_join_candidates_and_add_soft_and_jpeg_contents(tiny_corpus, tmp_path):
    """``build_plus_folders`` (the tail of ``gameqa corpus rebuild --plus``): the corpus and a candidate game merged,
    every train content softened (blur/half, then JPEG), synthetic scenes built, all merged into corpus-plus-sj; a
    rerun rebuilds nothing."""
    from gameqa.data.plus import PLUS_FOLDERS, build_plus_folders

    root, _, _, _ = tiny_corpus
    corpus = _one_game_corpus(tiny_corpus, tmp_path)
    others = tmp_path / "corpus-candidates"
    (others / "sources" / "gamma").mkdir(parents=True)
    clipgen.make_clip(others / "sources" / "gamma" / "s1.mkv", codec="libx264", size=(320, 180), fps=25,
                      seconds=1.2, source="testsrc", extra=["-crf", "0"])
    ladder = load_ladder(root / "ladder.toml")
    cand_rows, failures = build_corpus(others, ladder, natural=False, warn=lambda m: None)
    assert failures == [] and len(cand_rows) == 6
    write_manifest([dict(r, split="train") for r in cand_rows], others / "manifests" / "corpus.csv")

    small = {"synth_scenes": 1, "synth_size": (320, 180)}
    folders, failures = build_plus_folders(corpus, others, tmp_path, ladder, log=lambda m: None, **small)
    assert failures == [] and {k: p.name for k, p in folders.items()} == PLUS_FOLDERS
    merged = read_manifest(folders["plus_sj"] / "manifests" / "corpus.csv", root=folders["plus_sj"], check_files=True)
    contents = {r["content"] for r in merged}
    # three train contents (alpha's two, gamma's one): blur and half in turn, and a JPEG version of each
    assert {c for c in contents if "-soft" in c} == {
        "alpha--alpha-softblur", "alpha--beta-softhalf", "gamma--s1-softblur",
        "alpha--alpha-softjpeg", "alpha--beta-softjpeg", "gamma--s1-softjpeg"}, contents
    assert len(merged) == 12 + 6 + 3 * 6 + 3 * 6 + 6
    assert {r["group"] for r in merged if "-soft" in r["content"]} == {"soft"}
    assert {(r["content"], r["group"], r["split"]) for r in merged if r["game"] == "synthetic"} == {
        ("synthetic--scene-000", "synth", "train")}
    held = logo_split(merged, "gamma")  # the held-out game's soft and JPEG clips train nowhere
    assert not any(r["game"] == "gamma" for r in held["train"] + held["val"])
    assert {r["content"] for r in held["test"]} == {"gamma--s1"}

    clips = sorted((folders["jpeg"] / "clips").rglob("*.mkv"))
    stamps = [p.stat().st_mtime_ns for p in clips]
    folders, failures = build_plus_folders(corpus, others, tmp_path, ladder, log=lambda m: None, **small)
    assert failures == [] and [p.stat().st_mtime_ns for p in clips] == stamps
    assert len(read_manifest(folders["plus_sj"] / "manifests" / "corpus.csv")) == len(merged)


def test_files_that_are_not_utf8_are_one_line_errors_naming_them(tmp_path):
    from gameqa.data.games import load_corpus_config
    from gameqa.data.ratings import read_ava
    from gameqa.subjective.study import load_study
    from gameqa.subjective.votes import read_sureal_dataset
    from gameqa.train.aesthetic import load_config as load_aesthetic_config
    from gameqa.train.config import load_config

    text = "clip_id,path,game\nécran,a.mp4,jeu\n".encode("latin-1")
    for name, read in (("m.csv", read_manifest), ("ladder.toml", load_ladder), ("c.toml", load_config),
                       ("games.toml", load_corpus_config), ("a.toml", load_aesthetic_config),
                       ("ratings.py", read_sureal_dataset), ("ava.txt", read_ava), ("study.toml", load_study)):
        path = tmp_path / name
        path.write_bytes(text)
        with pytest.raises(ConfigError, match="is not UTF-8 text") as caught:
            read(path)
        assert str(caught.value).startswith(str(path))


def test_corpus_build_elsewhere_writes_its_manifest_there_not_the_repositorys(tmp_path):
    """`corpus build --root X` without --manifest writes X/manifests/corpus.csv: the repository's committed
    manifest is written (and read as the previous one) only for the default corpus."""
    from gameqa.data.cli import DEFAULT_MANIFEST, _manifest_for

    assert _manifest_for(None, None) == DEFAULT_MANIFEST
    assert _manifest_for(tmp_path, None) == tmp_path / "manifests" / "corpus.csv"
    assert _manifest_for(tmp_path, tmp_path / "m.csv") == tmp_path / "m.csv"


def test_a_manifest_with_one_clip_id_twice_is_refused(tmp_path):
    import csv as csv_module

    from gameqa.data.manifest import COLUMNS

    row = {c: "1" for c in COLUMNS}
    row.update(clip_id="c1", mos="3", split="test")
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as fh:
        writer = csv_module.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows([row, {**row, "mos": "4"}])
    with pytest.raises(ConfigError, match="line 3: clip_id 'c1' is also on line 2"):
        read_manifest(path)


def test_the_same_source_file_twice_is_one_source(tiny_corpus, tmp_path):
    import shutil

    root, _, _, _ = tiny_corpus
    sources = tmp_path / "sources"
    shutil.copytree(root / "sources", sources)
    first = next(p for p in sorted(sources.rglob("*")) if p.is_file())
    (sources / "copied").mkdir()
    shutil.copy(first, sources / "copied" / first.name)
    warnings = []
    found = find_sources(sources, 0.1, warnings.append)
    assert len(found) == len(find_sources(root / "sources", 0.1, lambda m: None))
    assert len({s.source_id for s in found}) == len(found)
    assert any("the same file as" in w and "copied" in w for w in warnings)


def test_clips_without_a_content_stand_for_their_own_source_when_softened(tmp_path):
    """A manifest row may leave content empty (each source its own content): softening must not fold every such
    source into one content named '' (whose soft file then had no game)."""
    from gameqa.data.corpus import source_game_content
    from gameqa.data.soften import _picked_sources

    rows = [{"split": "train", "group": "game", "game": g, "content": "", "source_id": s, "source_path": f"sources/{g}/{s}.mkv"}
            for g, s in (("ga", "s1"), ("ga", "s2"), ("gb", "s3"))]
    picked = _picked_sources(rows, (), 1)
    assert [c for c, _ in picked] == ["ga--s1", "ga--s2", "gb--s3"]
    root = tmp_path / "sources"
    assert source_game_content(root, root / f"{picked[2][0]}-softblur--00.mkv")[0] == "gb"


def test_stats_plot_must_be_png_and_merge_out_must_not_be_a_file(tiny_corpus, tmp_path):
    from typer.testing import CliRunner

    from gameqa.cli import app

    root, rows, _, _ = tiny_corpus
    done = CliRunner().invoke(app, ["corpus", "stats", str(root / "manifests" / "corpus.csv"), "--plot",
                                    str(tmp_path / "p.txt")])
    assert done.exit_code == 1 and "the plot is a PNG file" in done.output and not (tmp_path / "p.txt").exists()
    manifest = write_manifest([dict(r, split="train") for r in rows], tmp_path / "c" / "manifests" / "corpus.csv")
    done = CliRunner().invoke(app, ["corpus", "stats", str(tmp_path / "c"), "--json"])  # a corpus folder: its manifest
    assert done.exit_code == 0 and json.loads(done.stdout)["clips"] == len(rows), done.output
    done = CliRunner().invoke(app, ["corpus", "stats", str(manifest), "--plot", "/proc/stats.png"])
    assert done.exit_code != 0 and str(done.exception).startswith("/proc/stats.png: cannot write (")  # (main: a line)
    target = tmp_path / "file"
    target.write_text("")
    done = CliRunner().invoke(app, ["corpus", "merge", str(root), str(root), "--out", str(target)])
    assert done.exit_code == 1 and "is a file" in done.output and "Traceback" not in done.output


def test_leaving_out_a_game_the_manifest_lacks_names_the_manifest_and_its_games(tiny_corpus):
    root, rows, _, _ = tiny_corpus
    manifest = root / "manifests" / "corpus.csv"
    with pytest.raises(ConfigError, match=r"corpus\.csv: no clips of game 'zelda' in the manifest \(its games: alpha, beta\)"):
        logo_split(rows, "zelda", manifest)


def test_synth_scenes_are_reproducible_and_built_into_the_train_split(tiny_corpus, tmp_path):
    """Synthetic scroller scenes: the same number and seed give the same pixels; the scenes differ from each other
    (sky, layers, speed, brightness); built through the ladder, every clip is labelled, in the train split and the
    group ``synth`` of the game ``synthetic``, which a leave-one-game-out split keeps in training."""
    import av
    from typer.testing import CliRunner

    from gameqa.cli import app
    from gameqa.data.synth import scene_frames, scene_plan, synth_corpus, synth_sources

    root, corpus_rows, _, _ = tiny_corpus
    assert scene_plan(3) == scene_plan(3) and scene_plan(3) != scene_plan(3, seed=1)
    plans = [scene_plan(i) for i in range(24)]
    assert len({p["sky"] for p in plans}) == 3 and len({p["speed"] for p in plans}) >= 4
    assert min(p["brightness"] for p in plans) < 0.5 < 1.0 < max(p["brightness"] for p in plans)
    assert {p["weather"]["kind"] for p in plans} == {"none", "rain", "snow"}
    rainy = next(p for p in plans if p["weather"]["kind"] == "rain")
    dry = dict(rainy, weather={"kind": "none"})
    wet, plain = next(scene_frames(rainy, 1, 320, 180)), next(scene_frames(dry, 1, 320, 180))
    assert 0 < (wet != plain).any(axis=2).mean() < 0.2  # streaks over the scene, not a new scene
    first = list(scene_frames(plans[0], 3, 320, 180))
    assert first[0].shape == (180, 320, 3) and first[0].dtype == np.uint8
    assert not np.array_equal(first[0], first[2])  # it scrolls
    crowded = next(p for p in plans if p["hud"] and max((s["size"] for s in p["sprites"]), default=0) > 100)
    assert next(scene_frames(crowded, 1, 64, 48)).shape == (48, 64, 3)  # sprites and HUD fit a tiny scene

    manifest, rows, failures = synth_corpus(tmp_path / "synth", load_ladder(root / "ladder.toml"), 2,
                                            size=(320, 180), log=lambda m: None)
    assert failures == [] and len(rows) == 2 * 2 * 3
    assert {(r["game"], r["split"], r["group"]) for r in read_manifest(manifest)} == {("synthetic", "train", "synth")}
    assert {r["content"] for r in rows} == {"synthetic--scene-000", "synthetic--scene-001"}
    assert all(1.0 <= r["mos"] <= 5.0 for r in rows)
    held = logo_split(read_manifest(manifest) + [dict(r) for r in corpus_rows], "alpha")
    assert {r["game"] for r in held["train"]} >= {"synthetic"} and {r["game"] for r in held["test"]} == {"alpha"}

    def frames(path):
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24") for _, f in zip(range(4), c.decode(video=0))]

    again = synth_sources(tmp_path / "again", 1, 1.0, size=(320, 180), log=lambda m: None)[0]
    original = tmp_path / "synth" / "sources" / again.name
    assert all(np.array_equal(a, b) for a, b in zip(frames(again), frames(original)))

    with pytest.raises(ConfigError, match="at least one scene"):
        synth_sources(tmp_path / "none", 0, 1.0)
    result = CliRunner().invoke(app, ["corpus", "synth", "--out", str(tmp_path / "y"), "--count", "0"])
    assert result.exit_code != 0 and not (tmp_path / "y").exists()
    (tmp_path / "a-file").write_text("")
    result = CliRunner().invoke(app, ["corpus", "synth", "--out", str(tmp_path / "a-file"), "--count", "1"])
    assert result.exit_code == 1 and "a-file/sources: cannot make the sources folder" in result.output


def test_synth_scene_writer_names_ffmpegs_error_and_leaves_no_pipe_open(tmp_path):
    """ffmpeg that stops before it has every frame (here: an output folder that does not exist) is named in a
    GameQAError with ffmpeg's own message, not a broken pipe, and the pipes to it are closed (no ResourceWarning
    once the error and its traceback are gone)."""
    import gc
    import warnings

    from gameqa.data.synth import _write_scene, scene_plan
    from gameqa.errors import GameQAError

    dest = tmp_path / "missing" / "scene.mkv"
    message = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            _write_scene(scene_plan(0), 2.0, dest, (320, 240))
        except GameQAError as error:
            message = str(error)
        gc.collect()
    assert "scene.mkv: ffmpeg could not write the scene:" in message and "No such file" in message, message
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert not dest.parent.exists()
