"""`gameqa bench qp`: the quantiser alone, fitted per codec, on a tiny corpus of real encodes labelled by a real
full-reference metric (PSNR against each clip's source, mapped to 1-5)."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import clipgen
from gameqa.cli import app
from gameqa.data.manifest import write_manifest
from gameqa.data.manifest import read_manifest
from gameqa.errors import GameQAError, ModelError
from gameqa.export.onnx import export_onnx
from gameqa.media import DEFAULT_SAMPLE
from gameqa.media.bitstream import frame_qps
from gameqa.media.video import probe_video
from gameqa.models.qp_head import QPHead
from gameqa.evaluate.qp_bench import CACHE_NAME
from gameqa.models.qp_linear import FEATURES, QPLinear
from gameqa.scoring import Scorer
from tinycorpus import manifest_row

# Three "games", each two sources of different detail: the quantiser at one bitrate differs between them.
GAMES = {"fractal": ["mandelbrot", "mandelbrot=size=160x96:rate=10:start_scale=0.5"],
         "pattern": ["testsrc2", "testsrc"],
         "cells": ["life=size=160x96:rate=10:seed=7:ratio=0.3:mold=5", "cellauto=size=160x96:rate=10:seed=5:rule=110"]}
ENCODES = [("libx264", "h264", "mkv"), ("libvpx-vp9", "vp9", "webm")]
RATES = [8, 16, 32, 64, 128]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("qpcorpus")
    for folder in ("sources", "clips", "manifests"):
        (root / folder).mkdir()
    psnr = Scorer("psnr", sample="all")
    rows = []
    for game, sources in GAMES.items():
        for n, lavfi in enumerate(sources):
            src = clipgen.make_clip(root / "sources" / f"{game}{n}.mkv", size=(160, 96), fps=10, seconds=1,
                                    source=lavfi, extra=["-qp", "0"])
            for encoder, codec, ext in ENCODES:
                for rate in RATES:
                    clip = clipgen.make_clip(root / "clips" / f"{game}{n}-{codec}-{rate}.{ext}", codec=encoder,
                                             size=(160, 96), fps=10, seconds=1, source=lavfi,
                                             extra=["-b:v", f"{rate}k"])
                    label = min(5.0, max(1.0, 1 + (psnr.score(clip, ref=src).overall - 22) / 7))
                    row = manifest_row(root, 0, game, ("x", 160, 96, 0, 3.0), clip, src)
                    row.update(clip_id=f"{game}{n}-{codec}-{rate}", source_id=f"{game}{n}", codec=codec,
                               encoder=encoder, kbps=rate, display_height=96,
                               actual_kbps=round(clip.stat().st_size * 8 / 1000, 3), mos=round(label, 3),
                               split="test" if (n, game) == (1, "pattern") else "val" if n == 1 else "train")
                    rows.append(row)
    write_manifest(rows, root / "manifests" / "corpus.csv")
    return root


def test_bench_qp_reads_each_game_held_out_and_caches_the_quantisers(corpus, tmp_path):
    manifest = str(corpus / "manifests" / "corpus.csv")
    out = tmp_path / "qp.json"
    png = tmp_path / "qp.png"
    done = CliRunner().invoke(app, ["bench", "qp", "--manifest", manifest, "--json", str(out), "--plot", str(png)],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {png}" in done.output
    result = json.loads(out.read_text())
    assert set(result["games"]) == set(GAMES) and result["test"]["clips"] == 10
    for game, entry in result["games"].items():
        # Each game read by a fit on the other two only: the bitrate ladders of unseen sources still ordered.
        assert entry["clips"] == 20 and entry["srocc"] > 0.5, (game, entry)
    assert result["test"]["srocc"] > 0.5
    assert "every game at or over 0.90 held out" in done.output
    cache = json.loads((corpus / CACHE_NAME).read_text())
    assert len(cache) == 60 and {e["codec"] for e in cache.values()} == {"h264", "vp9"}

    # A second run reads no video: every clip blanked (same size and mtime), the cached levels give the same numbers.
    shutil.copytree(corpus / "clips", tmp_path / "kept", copy_function=shutil.copy2)
    try:
        for clip in (corpus / "clips").iterdir():
            stat = clip.stat()
            clip.write_bytes(bytes(stat.st_size))
            os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        again = CliRunner().invoke(app, ["bench", "qp", "--manifest", manifest, "--json", str(out)])
        assert again.exit_code == 0, again.output
        assert json.loads(out.read_text())["games"] == result["games"]
    finally:
        shutil.rmtree(corpus / "clips")
        shutil.copytree(tmp_path / "kept", corpus / "clips", copy_function=shutil.copy2)


def test_bench_qp_names_every_clip_it_cannot_read(corpus, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(corpus, bad)
    (bad / CACHE_NAME).unlink()
    old = clipgen.make_clip(tmp_path / "old.avi", codec="mpeg4", size=(160, 96), fps=10, seconds=1)
    target = bad / "clips" / "cells0-h264-8.mkv"
    target.write_bytes(old.read_bytes())
    cut = bad / "clips" / "fractal1-vp9-128.webm"
    cut.write_bytes(cut.read_bytes()[:300])
    done = CliRunner().invoke(app, ["bench", "qp", "--manifest", str(bad / "manifests" / "corpus.csv")])
    assert done.exit_code == 1
    assert f"{target}: no quantiser reader for mpeg4 video" in done.output
    assert str(cut) in done.output and "SROCC" not in done.output  # no table from a part of the corpus
    assert len(json.loads((bad / CACHE_NAME).read_text())) == 58  # what was read is kept for the rerun


def test_bench_qp_names_an_unknown_model_before_reading_any_clip(corpus, monkeypatch):
    monkeypatch.setattr("gameqa.evaluate.qp_bench.clip_levels", lambda *a, **k: pytest.fail("clips were read first"))
    done = CliRunner().invoke(app, ["bench", "qp", "--manifest", str(corpus / "manifests" / "corpus.csv"),
                                    "--cnn-model", "nosuchmodel"])
    assert done.exit_code == 1 and "unknown model 'nosuchmodel'" in done.output, done.output


def test_qp_linear_fits_per_codec_and_refuses_what_it_cannot_fit():
    # Labels made by a known linear rule of the features: the fit gives them back exactly.
    clips = [{"codec": "hevc", "level": lv, "height": h, "display_height": 720, "actual_kbps": kb,
              "mos": 4.5 - 3 * lv + 0.5 * h / 720} for lv in (0.2, 0.4, 0.6, 0.8) for h in (360, 720)
             for kb in (250, 2000)]
    model = QPLinear.fit(clips)
    assert list(model.coefs) == ["hevc"] and len(model.coefs["hevc"]) == len(FEATURES)
    assert model.predict(clips) == pytest.approx([c["mos"] for c in clips], abs=1e-9)
    with pytest.raises(ModelError, match="no av1 clips were fitted"):
        model.predict([{**clips[0], "codec": "av1"}])
    with pytest.raises(ModelError, match="3 vp9 clips to fit on"):
        QPLinear.fit(clips + [{**c, "codec": "vp9"} for c in clips[:3]])


def test_bench_qp_with_cnn_runs_reads_each_game_by_the_head_on_its_own_run(corpus, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from test_eraque import quiet, tiny_config
    from gameqa.evaluate.metrics import srocc
    from gameqa.evaluate.runs import run_scores
    from gameqa.train.trainer import Trainer

    manifest = str(corpus / "manifests" / "corpus.csv")
    runs = tmp_path / "runs"
    for game in GAMES:
        config = tiny_config(corpus, tmp_path / "work" / game, ["train.max_steps=2", f"name=logo-{game}",
                                                   f'data.logo_game="{game}"', f'out_dir="{runs / game}"'])
        Trainer(config, log=quiet).fit()
    out = tmp_path / "head.json"
    png = tmp_path / "head.png"
    args = ["bench", "qp", "--manifest", manifest, "--cnn-runs", str(runs / "*"), "--checkpoint", "last",
            "--crop-mode", "grid", "--json", str(out), "--plot", str(png)]
    done = CliRunner().invoke(app, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "CNN weight per codec" in done.output
    result = json.loads(out.read_text())
    assert set(result["cnn_runs"]) == set(GAMES)
    for game, entry in result["games"].items():
        # The CNN alone is read on the game's clips with its own run; the quantiser alone as without runs.
        assert entry["cnn"]["clips"] == entry["quantiser"]["clips"] == entry["clips"] == 20
        assert set(entry["cnn_weight"]) == {"h264", "vp9"} and entry["passes"] == (entry["srocc"] >= 0.90)
        own = run_scores(runs / game, manifest, "test", logo_game=game, crop_mode="grid", checkpoint="last")
        assert entry["cnn"]["srocc"] == pytest.approx(srocc(own.predictions, own.mos), abs=1e-12)
    assert len({e["cnn"]["srocc"] for e in result["games"].values()}) == 3  # three runs, three readings
    alone = json.loads(CliRunner().invoke(app, ["bench", "qp", "--manifest", manifest, "--json", str(out)]).exit_code
                       == 0 and out.read_text())
    assert {g: e["srocc"] for g, e in alone["games"].items()} == {
        g: e["quantiser"]["srocc"] for g, e in result["games"].items()}

    # The head to ship: fitted on the train and val clips of every game (each scored by its own game's run), saved,
    # carried by a model folder, applied by the scorer to what it reads of a clip's stream.
    saved = tmp_path / "qp_head.json"
    done = CliRunner().invoke(app, args + ["--save-head", str(saved)], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    head = QPHead.load(saved)
    assert head.codecs == ["h264", "vp9"] and head.display_height == 96
    assert head.fitted_on["clips"] == {"h264": 25, "vp9": 25} and head.fitted_on["splits"] == ["train", "val"]
    scores = {}
    for game in GAMES:
        scores.update(zip(*(lambda r: (r.clip_ids, r.predictions))(
            run_scores(runs / game, manifest, "test", logo_game=game, crop_mode="grid", checkpoint="last"))))
    rows = [dict(r, level=json.loads((corpus / CACHE_NAME).read_text())[r["path"]]["level"], cnn=scores[r["clip_id"]])
            for r in read_manifest(manifest) if r["split"] != "test"]
    refit = QPLinear.fit(rows, with_cnn=True).coefs
    assert all(head.linear.coefs[c] == pytest.approx(refit[c], abs=1e-9) for c in ("h264", "vp9"))

    folder = tmp_path / "model"
    export_onnx(runs / "cells" / "last.pt", folder, name="qp-head-test")
    shutil.copy(saved, folder / "qp_head.json")
    spec = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**spec, "bitstream_head": "qp_head.json"}))
    bare = tmp_path / "bare"  # the same model without its head
    shutil.copytree(folder, bare)
    (bare / "model.json").write_text(json.dumps({**spec, "name": "qp-head-test-bare"}))
    clip = corpus / "clips" / "cells1-vp9-16.webm"
    with_head = Scorer(str(folder)).score(clip)
    read = with_head.bitstream
    assert read["applied"] and read["codec"] == "vp9" and read["qp_level"] == pytest.approx(frame_qps(clip).level, abs=1e-5)
    assert read["kbps"] == pytest.approx(clip.stat().st_size * 8 / 1000 / probe_video(clip).duration, rel=1e-4)
    expected = head.linear.predict([{"codec": "vp9", "level": frame_qps(clip).level, "height": 96,
                                     "display_height": 96, "actual_kbps": read["kbps"],
                                     "cnn": read["pixel_overall"]}])[0]
    assert with_head.overall == pytest.approx(min(5.0, max(1.0, expected)), abs=1e-3)
    assert with_head.summary()["head"] == "quantiser (vp9)"
    from gameqa.cluster.batch import ScoreSpec, score_chunk
    (row,) = score_chunk([str(clip)], ScoreSpec(model=str(folder), sample=DEFAULT_SAMPLE))  # a batch row says it too
    assert (row["overall"], row["pixel_overall"], row["head"]) == (with_head.overall, read["pixel_overall"],
                                                                   "quantiser (vp9)")
    # The scorer reads a VP9 (or H.264) clip's quantiser in the decode that samples its frames, not in a second one.
    with monkeypatch.context() as patched:
        patched.setattr("gameqa.media.bitstream.frame_qps", lambda *a, **k: pytest.fail("the clip was decoded twice"))
        assert Scorer(str(folder)).score(clip).overall == with_head.overall
    assert read["pixel_overall"] == pytest.approx(Scorer(str(bare)).score(clip).overall, abs=1e-9)
    assert Scorer(str(bare)).score(clip).bitstream is None and "head" not in Scorer(str(bare)).score(clip).summary()
    # What the head cannot read keeps the pixel score, and says why: another codec, an image, another pooling.
    mpeg4 = clipgen.make_clip(tmp_path / "mpeg4.avi", codec="mpeg4", size=(160, 96), fps=10, seconds=1)
    other = Scorer(str(folder)).score(mpeg4)
    assert not other.bitstream["applied"] and "no quantiser head for mpeg4 (fitted: h264, vp9)" in (
        other.summary()["head"]) and other.overall == other.bitstream["pixel_overall"]
    image = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 160, 3), dtype=np.uint8)).save(image)
    assert Scorer(str(folder)).score(image).bitstream["reason"] == "an image has no bitstream"
    worst = Scorer(str(folder), pooling="worst:10").score(clip).bitstream
    assert not worst["applied"] and "fitted on mean pooling, not worst:10" in worst["reason"]
    # `gameqa eval` reads a model folder with its head, as the scorer does.
    from gameqa.train.evaluation import evaluate_split
    pixels, headed = (evaluate_split(str(f), manifest, "test", bootstrap=1) for f in (bare, folder))
    assert pixels.clip_ids == headed.clip_ids and len(headed.clip_ids) == 10
    tests = {r["clip_id"]: r for r in read_manifest(manifest, root=corpus)}
    expected = head.linear.predict([{**tests[i], "level": frame_qps(tests[i]["abs_path"]).level, "cnn": p,
                                     "actual_kbps": os.path.getsize(tests[i]["abs_path"]) * 8 / 1000 /
                                     probe_video(tests[i]["abs_path"]).duration}
                                    for i, p in zip(pixels.clip_ids, pixels.predictions)])
    assert headed.predictions == pytest.approx(np.clip(expected, 1, 5), abs=1e-9)
    # A head file that is not one: one line naming it, before any scoring.
    (folder / "qp_head.json").write_text(json.dumps({**head.to_dict(), "coefs": {"vp9": [1, 2]}}))
    with pytest.raises(GameQAError, match="qp_head.json.*coefs must map each codec to 8 finite numbers"):
        Scorer(str(folder))
    done = CliRunner().invoke(app, ["bench", "qp", "--manifest", manifest, "--save-head", str(saved)])
    assert done.exit_code == 1 and "--save-head needs --cnn-runs" in done.output

    # One game without a run that held it out: named, nothing read.
    (runs / "cells").rename(tmp_path / "aside")
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 1 and "no run holds out cells" in done.output


def test_bench_qp_with_one_model_fits_the_head_on_its_pixel_scores(corpus, tmp_path, monkeypatch):
    """--cnn-model: one model (here a folder that carries a head of its own) scores every clip by its pixels alone;
    the test split is read by the quantiser alone, the CNN alone and a head fitted on train + val."""
    import onnxgen
    from gameqa.evaluate.metrics import srocc
    from gameqa.train.evaluation import evaluate_split

    monkeypatch.setenv("GAMEQA_CACHE", str(tmp_path / "cache"))
    manifest = str(corpus / "manifests" / "corpus.csv")
    bare = onnxgen.write_mean_model(tmp_path / "bare", name="qp-mean-bare")
    folder = onnxgen.write_mean_model(tmp_path / "headed", name="qp-mean-headed", extra={"bitstream_head": "qp_head.json"})
    own = QPHead(QPLinear({"h264": (9.0,) * (len(FEATURES) + 1), "vp9": (-9.0,) * (len(FEATURES) + 1)}, with_cnn=True), 96)
    own.save(folder / "qp_head.json")
    saved = tmp_path / "fitted.json"
    out = tmp_path / "qp.json"
    done = CliRunner().invoke(app, ["bench", "qp", "--manifest", manifest, "--cnn-model", str(folder), "--json",
                                    str(out), "--save-head", str(saved)], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert f"the quantiser head on {folder}" in done.output and "head fitted on 50 clips of train, val" in done.output
    result = json.loads(out.read_text())
    pixels = {}
    for split in ("train", "val", "test"):  # the model's pixel score alone: that of the same model without a head
        read = evaluate_split(str(bare), manifest, split, bootstrap=1)
        pixels.update(zip(read.clip_ids, read.predictions))
    rows = read_manifest(manifest)
    levels = json.loads((corpus / CACHE_NAME).read_text())
    clips = [dict(r, level=levels[r["path"]]["level"], cnn=pixels[r["clip_id"]]) for r in rows]
    fit = [c for c in clips if c["split"] != "test"]
    test = [c for c in clips if c["split"] == "test"]
    entry = result["test"]
    assert entry["clips"] == entry["cnn"]["clips"] == entry["quantiser"]["clips"] == 10
    assert entry["cnn"]["srocc"] == pytest.approx(srocc([c["cnn"] for c in test], [c["mos"] for c in test]), abs=1e-12)
    by_hand = QPLinear.fit(fit, with_cnn=True)
    assert entry["srocc"] == pytest.approx(srocc(by_hand.predict(test), [c["mos"] for c in test]), abs=1e-12)
    assert entry["quantiser"]["srocc"] == pytest.approx(
        srocc(QPLinear.fit(fit).predict(test), [c["mos"] for c in test]), abs=1e-12)
    head = QPHead.load(saved)
    assert all(head.linear.coefs[c] == pytest.approx(by_hand.coefs[c], abs=1e-9) for c in ("h264", "vp9"))
    assert head.fitted_on["model"] == str(folder) and head.fitted_on["clips"] == {"h264": 25, "vp9": 25}
    # the games are read by the quantiser alone, as without a model
    alone = CliRunner().invoke(app, ["bench", "qp", "--manifest", manifest, "--json", str(tmp_path / "alone.json")])
    assert alone.exit_code == 0, alone.output
    assert json.loads((tmp_path / "alone.json").read_text())["games"] == result["games"]
    both = CliRunner().invoke(app, ["bench", "qp", "--manifest", manifest, "--cnn-model", str(folder),
                                    "--cnn-runs", str(tmp_path / "runs*")])
    assert both.exit_code == 1 and "give one" in both.output
    # The model's scores are kept in the corpus: read again (by slice), no clip is scored again.
    with monkeypatch.context() as patched:
        patched.setattr("gameqa.train.evaluation.score_rows", lambda *a, **k: pytest.fail("scored again"))
        again = CliRunner().invoke(app, ["bench", "qp", "--manifest", manifest, "--cnn-model", str(folder),
                                         "--h264-qp", "slice", "--json", str(out)], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert json.loads(out.read_text())["test"]["cnn"] == result["test"]["cnn"]


def test_a_head_read_by_slice_reads_h264_headers_and_decodes_as_usual(corpus, tmp_path, monkeypatch):
    """--h264-qp slice: H.264 clips' quantisers come from their slice headers (cached apart from the macroblock
    reading), the saved head says so, and the scorer reads an H.264 clip's headers instead of collecting the QP
    of each decoded frame (its decode keeps its usual threads); VP9 is still collected while decoding."""
    import onnxgen

    monkeypatch.setenv("GAMEQA_CACHE", str(tmp_path / "cache"))
    manifest = str(corpus / "manifests" / "corpus.csv")
    bare = onnxgen.write_mean_model(tmp_path / "bare", name="qp-slice-bare")
    saved, out = tmp_path / "slice-head.json", tmp_path / "slice.json"
    done = CliRunner().invoke(app, ["bench", "qp", "--manifest", manifest, "--cnn-model", str(bare), "--h264-qp",
                                    "slice", "--save-head", str(saved), "--json", str(out)], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert json.loads(out.read_text())["h264_qp"] == "slice"
    head = QPHead.load(saved)
    assert head.h264_qp == "slice" and head.decoded_codecs == ("vp9",)
    cache = json.loads((corpus / CACHE_NAME).read_text())
    h264 = next(r for r in read_manifest(manifest, root=corpus) if r["codec"] == "h264")
    assert cache[h264["path"] + "#slice"]["level"] == pytest.approx(frame_qps(h264["abs_path"], h264="slice").level)
    assert frame_qps(h264["abs_path"], h264="slice").qps != frame_qps(h264["abs_path"]).qps  # two readings

    folder = onnxgen.write_mean_model(tmp_path / "slice-model", name="qp-slice-headed",
                                      extra={"bitstream_head": "qp_head.json"})
    shutil.copy(saved, folder / "qp_head.json")
    with monkeypatch.context() as patched:  # no decoded frame's QP is read for H.264
        patched.setattr("gameqa.media.bitstream._frame_qp", lambda *a: pytest.fail("an H.264 frame's QP was decoded"))
        read = Scorer(str(folder)).score(h264["abs_path"]).bitstream
    assert read["applied"] and read["qp_level"] == pytest.approx(frame_qps(h264["abs_path"], h264="slice").level,
                                                                 abs=1e-5)
    vp9 = next(r for r in read_manifest(manifest, root=corpus) if r["codec"] == "vp9")
    with monkeypatch.context() as patched:  # VP9's quantiser is still read in the scorer's own decode
        patched.setattr("gameqa.media.bitstream.frame_qps", lambda *a, **k: pytest.fail("the clip was decoded twice"))
        assert Scorer(str(folder)).score(vp9["abs_path"]).bitstream["applied"]
    bad = tmp_path / "bad-head.json"
    bad.write_text(json.dumps({**head.to_dict(), "h264_qp": "blocks"}))
    with pytest.raises(GameQAError, match="h264_qp must be one of macroblock, slice"):
        QPHead.load(bad)


def test_model_scores_are_kept_chunk_by_chunk_and_a_stopped_reading_resumes(corpus, tmp_path, monkeypatch):
    import onnxgen
    import gameqa.train.evaluation as evaluation
    from gameqa.evaluate import qp_bench

    monkeypatch.setenv("GAMEQA_CACHE", str(tmp_path / "cache"))
    model = str(onnxgen.write_mean_model(tmp_path / "m", name="qp-chunks"))
    rows = read_manifest(corpus / "manifests" / "corpus.csv", root=corpus)
    real = evaluation.score_rows
    calls: list[int] = []

    def stops_at_the_third(name, chunk, **kwargs):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(name, chunk, **kwargs)

    monkeypatch.setattr(qp_bench, "_SCORES_CHUNK", 7)
    monkeypatch.setattr(evaluation, "score_rows", stops_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        qp_bench._model_scores(model, rows, corpus, None)
    calls.clear()
    monkeypatch.setattr(evaluation, "score_rows", lambda name, chunk, **kw: calls.append(len(chunk)) or real(name, chunk, **kw))
    scores = qp_bench._model_scores(model, rows, corpus, None)
    assert sum(calls) == len(rows) - 14  # the two chunks written before the stop are not scored again
    assert scores == pytest.approx(real(model, rows, bitstream_head=False), abs=1e-12)
