"""The gameqa command line, run for real: scoring, formats, full-reference, eval, and bad input."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import clipgen
from gameqa.cli import app, bundled_clip

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
GAMEQA = [sys.executable, "-m", "gameqa.cli"]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    clipgen.make_clip(d / "ref.mkv", codec="libx264", size=(192, 144), fps=10, seconds=1.0,
                      source="mandelbrot", extra=["-crf", "0"])
    dist = clipgen.make_clip(d / "dist.mp4", codec="libx264", size=(192, 144), fps=10, seconds=1.0,
                             source="mandelbrot", extra=["-crf", "40"])
    img = d / "shot.png"
    Image.fromarray((np.random.default_rng(0).random((144, 192, 3)) * 255).astype(np.uint8)).save(img)
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.txt.mp4").write_text("this is not a video\n")
    clipgen.make_audio_only(d / "audio.m4a")
    clipgen.truncate_file(dist, d / "truncated.mp4", keep=0.4)
    return d


def test_score_json_per_frame(clips, tmp_path):
    out = tmp_path / "scores.json"
    r = invoke("score", str(clips / "dist.mp4"), "--sample", "every:2", "--output", "json", "--per-frame",
               "--out", str(out), "--model", "niqe")
    assert r.exit_code == 0, r.output
    [res] = json.loads(out.read_text())
    assert res["model"] == "niqe" and res["model_version"] == "1.0" and res["lower_better"] is True
    assert res["frame_indices"] == [0, 2, 4, 6, 8]
    assert res["timestamps"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert len(res["frame_scores"]) == 5 and res["overall"] == pytest.approx(np.mean(res["frame_scores"]))
    assert res["timing"]["frames"] == 5 and res["timing"]["total_s"] > 0


def test_full_reference_psnr_orders_quality(clips):
    r_good = invoke("score", str(clips / "ref.mkv"), "--ref", str(clips / "ref.mkv"), "-m", "psnr", "-o", "jsonl")
    r_bad = invoke("score", str(clips / "dist.mp4"), "--ref", str(clips / "ref.mkv"), "-m", "psnr", "-o", "jsonl")
    assert r_good.exit_code == 0 and r_bad.exit_code == 0
    good, bad = json.loads(r_good.stdout)["overall"], json.loads(r_bad.stdout)["overall"]
    assert good == 100.0 and 15 < bad < 45
    r = invoke("score", str(clips / "dist.mp4"), "-m", "ssim")
    assert r.exit_code == 1 and "full-reference" in r.output


def test_batch_goes_on_and_lists_failures(clips, tmp_path):
    out = tmp_path / "batch.csv"
    names = ["dist.mp4", "empty.mp4", "notes.txt.mp4", "audio.m4a", "truncated.mp4", "missing.mp4", "shot.png"]
    proc = subprocess.run([*GAMEQA, "score", *(str(clips / n) for n in names), "-o", "csv", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sorted(Path(r["path"]).name for r in rows) == ["dist.mp4", "shot.png"]
    assert "5 of 7 inputs failed" in proc.stderr
    for name in ("empty.mp4", "notes.txt.mp4", "audio.m4a", "truncated.mp4", "missing.mp4"):
        [line] = [ln for ln in proc.stderr.splitlines() if name in ln]
        assert line.strip().startswith(str(clips / name) + ":")


def test_file_names_with_brackets_are_printed_as_they_are(clips, tmp_path):
    """Rich read "[hq]" in "clip[hq].mp4" as a style tag and dropped it: the error named a file that does not
    exist. Every error line, failure list, table (gameqa.console.Table) and per-frame line now prints the user's
    text as it is."""
    import shutil

    bad, good = tmp_path / "clip[hq].mp4", tmp_path / "shot[red].png"
    bad.write_text("not a video")
    shutil.copy(clips / "shot.png", good)
    env = {**os.environ, "COLUMNS": "300"}
    proc = subprocess.run([*GAMEQA, "score", str(bad), str(good), "--model", "niqe", "--per-frame"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"  {bad}: not an image or video file" in proc.stderr
    assert f"{good}: 0@" in proc.stdout
    table = subprocess.run([*GAMEQA, "score", str(good), "--model", "niqe"], capture_output=True, text=True,
                           timeout=120, env=env)
    assert table.returncode == 0 and "│ shot[red].png │" in table.stdout, table.stdout
    probe = subprocess.run([*GAMEQA, "probe", str(bad)], capture_output=True, text=True, timeout=60, env=env)
    assert probe.returncode == 1 and f"error: {bad}: " in probe.stderr
    batch = subprocess.run([*GAMEQA, "batch", str(bad), str(good), "--model", "niqe", "--out", str(tmp_path / "b.jsonl")],
                           capture_output=True, text=True, timeout=120, env=env)
    assert f"  {bad}: not an image or video file" in batch.stderr, batch.stderr[-2000:]


def test_huge_image_is_refused(tmp_path):
    from clipgen import png_header_only  # a 60,000 x 60,000 PNG header, no pixel data

    big = png_header_only(tmp_path / "huge.png", 60_000, 60_000)
    proc = subprocess.run([*GAMEQA, "score", str(big)], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "huge.png" in proc.stderr and "pixels" in proc.stderr


def test_frames_too_small_or_too_thin_are_refused_naming_the_file(clips, tmp_path):
    """A sliver or a tiny image once crashed ONNX Runtime (a crop 2 px wide) or grew to gigabytes when shown at the
    display height (3000 x 2 -> 1,080,000 x 720); now each is one line naming it, and the batch goes on. A
    narrow portrait frame is scaled up until a crop fits and is scored."""
    def image(name: str, width: int, height: int) -> Path:
        rgb = (np.random.default_rng(width * height).random((height, width, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / name)
        return tmp_path / name

    inputs = [image("sliver-wide.png", 3000, 2), image("sliver-tall.png", 2, 3000), image("tiny.png", 10, 10),
              image("thin.png", 3000, 17), image("portrait.png", 300, 700), clips / "shot.png"]
    out = tmp_path / "scores.jsonl"
    for model in ("eraque-student", "brisque"):
        proc = subprocess.run([*GAMEQA, "score", *map(str, inputs), "-m", model, "-o", "jsonl", "--out", str(out)],
                              capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        scored = {Path(json.loads(line)["path"]).name for line in out.read_text().splitlines()}
        assert {"portrait.png", "shot.png"} <= scored and not scored & {"sliver-wide.png", "sliver-tall.png", "tiny.png"}
        for name, size in (("sliver-wide.png", "3000x2"), ("sliver-tall.png", "2x3000"), ("tiny.png", "10x10")):
            [line] = [ln for ln in proc.stderr.splitlines() if name in ln]
            assert line.strip().startswith(f"{tmp_path / name}: ") and size in line and "too small" in line
        if model == "eraque-student":  # shown 720 px high it would be 127,059 px wide
            [line] = [ln for ln in proc.stderr.splitlines() if "thin.png" in ln]
            assert line.strip() == (f"{tmp_path / 'thin.png'}: frame 3000x17 is too long and thin to score: shown at "
                                    "this model's size it would be 127059x720, over 35 M pixels")


def test_shown_size_scales_to_the_display_then_until_a_crop_fits():
    from gameqa.errors import ModelError
    from gameqa.models.onnx_engine import shown_frame, shown_size

    assert shown_size(1080, 1920, 720, 320) == (1080, 1920)  # larger frames stay
    assert shown_size(360, 640, 720, 320) == (720, 1280)     # up to the display height
    assert shown_size(700, 300, 720, 224) == (720, 309)      # 300 * 720 / 700 = 308.6 -> 309, a 224 crop fits
    assert shown_size(700, 300, 720, 320) == (746, 320)      # then up by 320 / 309 until a 320 crop fits
    assert shown_size(3000, 100, 720, 320) == (9600, 320)    # tall: no display scaling, only the crop's
    assert shown_size(16, 16, None, 0) == (16, 16)
    assert shown_size(6000, 9000, 720, 320) == (6000, 9000)  # 54 M pixels at its own size: decoding guards that
    with pytest.raises(ModelError, match="too small"):
        shown_size(15, 500, 720, 320)
    with pytest.raises(ModelError, match="too long and thin"):
        shown_size(17, 3000, 720, 320)
    frame = np.zeros((700, 300, 3), np.uint8)
    assert shown_frame(frame, 720, 320).shape == (746, 320, 3)
    assert shown_frame(frame, None) is frame


def test_a_batch_where_nothing_scores_leaves_the_out_file_as_it_was(tmp_path):
    Image.new("RGB", (10, 10)).save(tmp_path / "tiny.png")
    out = tmp_path / "scores.jsonl"
    out.write_text('{"earlier": "results"}\n')
    proc = subprocess.run([*GAMEQA, "score", str(tmp_path / "tiny.png"), "-o", "jsonl", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert out.read_text() == '{"earlier": "results"}\n'
    assert f"nothing scored: {out} not written" in proc.stderr and "1 of 1 inputs failed" in proc.stderr


def test_a_command_whose_extra_is_not_installed_says_which_in_one_line(tmp_path):
    """torch made unimportable (as in a plain `pip install -e .`): `gameqa train` names the extra to install."""
    code = ("import sys\n"
            "class NoTorch:  # finds torch nowhere, as an install without it\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from gameqa.cli import main\n"
            f"sys.argv = ['gameqa', 'train', {str(REPO / 'configs/eraque/default.toml')!r}]\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip() == "error: this command needs torch, which is not installed: pip install -e '.[train]'"


def test_folder_glob_and_list_inputs(clips, tmp_path):
    listing = tmp_path / "files.txt"
    listing.write_text(f"# clips to score\n{clips / 'dist.mp4'}\n{clips / 'shot.png'}\n")
    r = invoke("score", f"@{listing}", "-o", "jsonl")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 2
    r = invoke("score", str(clips / "*.mkv"), "-o", "jsonl")
    assert r.exit_code == 0 and json.loads(r.stdout)["path"].endswith("ref.mkv")
    r = invoke("score", str(tmp_path / "nothing-*.mp4"))
    assert r.exit_code == 1 and "pattern matches no file" in r.output


def test_bad_options_are_one_line(clips):
    r = invoke("score", str(clips / "dist.mp4"), "--sample", "fps:-1")
    assert r.exit_code == 2 and "fps:-1" in r.output
    r = invoke("score", str(clips / "dist.mp4"), "--model", "nope")
    assert r.exit_code == 2 and "unknown model 'nope'" in r.output
    r = invoke("score", str(clips / "dist.mp4"), "--output", "xml")
    assert r.exit_code == 2


def test_an_output_that_cannot_be_written_is_one_line_and_leaves_nothing(clips, tmp_path):
    """Every writer goes through sinks.write_atomic: a folder in the output's place, or a parent that is a file,
    gives one line naming the output, a non-zero exit, no temp file, and the folder's contents untouched."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("kept")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for target, problem in ((taken, "cannot write (Is a directory)"),
                            (blocker / "scores.json", f"cannot make its folder {blocker} (File exists)")):
        done = subprocess.run([*GAMEQA, "score", str(clips / "dist.mp4"), "--model", "niqe", "--output", "json",
                               "--out", str(target)], capture_output=True, text=True, timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1, done.stderr[-2000:]
        assert lines[0] == f"error: {target}: {problem}"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a-file", "keep.txt", "taken"]
    assert (taken / "keep.txt").read_text() == "kept" and blocker.read_text() == "not a folder"


def test_a_link_a_pipe_or_stdout_as_the_output_is_written_through_never_replaced(clips, tmp_path):
    """`--out /dev/null` (or /dev/stdout, a FIFO, a link to a file) used to be replaced by a new regular file, as
    root the device itself. Now a link keeps pointing at its file, which gets the scores; a FIFO and stdout get the
    scores through them and stay what they were; a device that cannot take them is one line."""
    import stat
    import threading

    base = [*GAMEQA, "score", str(clips / "dist.mp4"), "--model", "niqe", "--output", "csv", "--out"]
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    done = subprocess.run([*base, str(link)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and real.read_text().startswith("path,kind,model") and "dist.mp4" in real.read_text()

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    done = subprocess.run([*base, str(fifo)], capture_output=True, text=True, timeout=120)
    reader.join(timeout=60)
    assert done.returncode == 0, done.stderr
    assert got and got[0].startswith("path,kind,model") and stat.S_ISFIFO(os.lstat(fifo).st_mode)

    done = subprocess.run([*base, "/dev/stdout"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("path,kind,model"), done.stderr
    assert os.path.islink("/dev/stdout") or stat.S_ISCHR(os.stat("/dev/stdout").st_mode)
    if os.path.isdir("/dev/shm"):  # a regular file under /dev is replaced as anywhere else, not appended to
        shm = f"/dev/shm/gameqa-test-{os.getpid()}.csv"
        try:
            for _ in range(2):
                assert subprocess.run([*base, shm], capture_output=True, timeout=120).returncode == 0
            assert Path(shm).read_text().count("path,kind,model") == 1
        finally:
            Path(shm).unlink(missing_ok=True)
    if stat.S_ISCHR(os.stat("/dev/full").st_mode):
        done = subprocess.run([*base, "/dev/full"], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and done.stderr.strip() == "error: /dev/full: cannot write (No space left on device)"
        assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)


def test_failures_of_a_batch_of_files_are_the_first_lines_on_a_non_terminal(clips, tmp_path):
    """The progress bar is for terminals: piped or logged, stderr holds the failures only (the transient bar
    left a blank line in front of them)."""
    done = subprocess.run([*GAMEQA, "score", str(clips / "dist.mp4"), str(clips / "empty.mp4"), "-m", "niqe",
                           "--out", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("1 of 2 inputs failed:\n"), repr(done.stderr[:200])


def test_probe_models_demo(clips):
    r = invoke("probe", str(clips / "dist.mp4"), "--json")
    info = json.loads(r.stdout)[0]
    assert (info["codec"], info["width"], info["height"], info["frame_count"]) == ("h264", 192, 144, 10)
    assert "mean_qp" not in info
    lossless, lossy = json.loads(invoke("probe", str(clips / "ref.mkv"), str(clips / "dist.mp4"), "--qp", "--json").stdout)
    assert lossless["mean_qp"] == 0 and lossy["qp_max"] == 51 and 30 < lossy["mean_qp"] <= 51
    assert lossy["qp_level"] == pytest.approx(lossy["mean_qp"] / 51, abs=1e-3)
    r = invoke("probe", str(clips / "empty.mp4"))
    assert r.exit_code == 1 and "empty.mp4" in r.output
    r = invoke("probe", str(clips), "--json")  # a folder: its videos (not shot.png), the bad ones listed
    assert r.exit_code == 1 and "is a directory" not in r.output
    found = {Path(i["path"]).name for i in json.loads(r.stdout)}
    assert found == {"dist.mp4", "ref.mkv"} and "truncated.mp4" in r.stderr and "empty.mp4" in r.stderr
    r = invoke("models", "--json")
    assert {m["name"] for m in json.loads(r.stdout)} >= {"niqe", "psnr", "ssim"}
    assert bundled_clip().is_file()
    r = invoke("demo", "--no-per-frame")
    assert r.exit_code == 0 and "wesnoth_720p30.mp4" in r.stdout


def test_eval_command(tmp_path):
    rng = np.random.default_rng(1)
    mos = rng.uniform(1, 5, 30)
    pred = mos + rng.normal(0, 0.3, 30)
    (tmp_path / "labels.csv").write_text("clip,mos\n" + "".join(f"c{i}.mp4,{m}\n" for i, m in enumerate(mos)))
    (tmp_path / "pred.jsonl").write_text("".join(json.dumps({"path": f"/x/c{i}.mp4", "overall": p}) + "\n"
                                                 for i, p in enumerate(pred)))
    r = invoke("eval", str(tmp_path / "pred.jsonl"), str(tmp_path / "labels.csv"), "--json", "--bootstrap", "200")
    assert r.exit_code == 0, r.output
    table = json.loads(r.stdout)["table"]
    srocc = next(row for row in table if row["metric"] == "SROCC" and not row["mapped"])
    from scipy.stats import spearmanr

    assert srocc["value"] == pytest.approx(spearmanr(pred, mos).statistic, abs=1e-9)
    r = invoke("eval", str(tmp_path / "pred.jsonl"), str(tmp_path / "missing.csv"))
    assert r.exit_code == 1 and "missing.csv" in r.output


def test_bench_decode_prints_the_ratio_table():
    r = runner.invoke(app, ["bench", "decode", "--repeats", "1"], catch_exceptions=False, env={"COLUMNS": "160"})
    assert r.exit_code == 0
    assert "ffmpeg -f null" in r.stdout and "gameqa reader" in r.stdout and "1.00" in r.stdout


def test_crops_draws_where_the_model_looks_and_scores_as_score_does(x264_clip, tmp_path):
    """`gameqa crops`: the bundled models' crops on one frame, each scored; their mean is the frame's score."""
    from PIL import Image

    from gameqa.api import load

    runner = CliRunner()
    frames = load("eraque", sample="all").score(str(x264_clip))
    for model, count in (("eraque", 4), ("eraque-student", 1)):
        png = tmp_path / f"{model}.png"
        done = runner.invoke(app, ["crops", str(x264_clip), "--out", str(png), "-m", model, "--frame", "7"])
        assert done.exit_code == 0, done.output
        rows = [line for line in done.output.splitlines() if line.startswith("│")]
        assert len(rows) == count
        with Image.open(png) as image:  # drawn on the frame as the model sees it (upscaled to its display size)
            assert image.size == (960, 720) and image.format == "PNG"
        if model == "eraque":
            mean = float(done.output.split("mean of the crops): ")[1].split(";")[0])
            assert mean == pytest.approx(frames.frame_scores[frames.frame_indices.index(7)], abs=1e-3)
    bad = runner.invoke(app, ["crops", str(x264_clip), "--out", str(tmp_path / "x.png"), "--frame", "99"])
    assert bad.exit_code == 1 and "has 30 frames, no frame 99" in bad.output and not (tmp_path / "x.png").exists()
    whole = runner.invoke(app, ["crops", str(x264_clip), "--out", str(tmp_path / "y.png"), "-m", "niqe"])
    assert whole.exit_code == 1 and "not an ONNX crop model" in whole.output and not (tmp_path / "y.png").exists()
    # another reading of the same model, as `gameqa eval --crops/--crop-mode/--crop-size` takes it
    other = runner.invoke(app, ["crops", str(x264_clip), "--out", str(tmp_path / "t.png"), "-m", "eraque-student",
                                "--frame", "7", "--crops", "3", "--crop-mode", "typical", "--crop-size", "160"])
    assert other.exit_code == 0, other.output
    rows = [line.split("│")[1:-1] for line in other.output.splitlines() if line.startswith("│")]
    assert len(rows) == 3 and {r[3].strip() for r in rows} == {"160"} and "typical crops" in other.output
    for args, says in ((["-m", "niqe", "--crop-mode", "grid"], "'niqe' reads whole frames"),
                       (["-m", "eraque-student", "--crop-mode", "random"], "crop mode must be one of")):
        refused = runner.invoke(app, ["crops", str(x264_clip), "--out", str(tmp_path / "z.png"), *args])
        assert refused.exit_code == 2 and says in refused.output and not (tmp_path / "z.png").exists(), args


def test_frames_without_a_score_are_null_in_json_and_never_the_worst_frame(tmp_path):
    """NIQE has no score for a flat black frame (NaN): JSON says null (NaN is not JSON), and the table's worst
    frame is a frame with a score."""
    clip = clipgen.make_clip(tmp_path / "halfblack.mp4", size=(192, 144), fps=4, seconds=2.0,
                             video_filter="drawbox=enable='lt(t,1)':x=0:y=0:w=iw:h=ih:color=black:t=fill")
    done = invoke("score", str(clip), "-m", "niqe", "-s", "all", "--per-frame", "-o", "json")
    assert done.exit_code == 0, done.output
    [row] = json.loads(done.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    scores = row["frame_scores"]
    assert scores[:4] == [None] * 4 and all(isinstance(v, float) for v in scores[4:])
    table = invoke("score", str(clip), "-m", "niqe", "-s", "all")
    worst = max(scores[4:])  # NIQE: lower is better
    assert f"{scores.index(worst)} @ " in table.stdout and "nan" not in table.stdout.lower()


def test_a_list_file_that_names_itself_is_one_error_and_the_rest_is_scored(clips, tmp_path):
    loop = tmp_path / "loop.txt"
    other = tmp_path / "other.txt"
    loop.write_text(f"loop.txt\nother.txt\n{clips / 'shot.png'}\n")
    other.write_text("loop.txt\n")
    done = invoke("score", str(loop), "-m", "niqe", "-o", "jsonl")
    assert done.exit_code == 1 and len(done.stdout.splitlines()) == 1
    assert done.output.count("list file names itself") == 2


def test_crops_to_a_folder_or_inside_a_file_is_one_line(x264_clip, tmp_path):
    for out in (tmp_path, Path(x264_clip) / "x.png"):
        done = runner.invoke(app, ["crops", str(x264_clip), "--out", str(out), "-m", "eraque-student"])
        assert done.exit_code == 1 and str(out) in done.output and "Traceback" not in done.output, done.output
    png = tmp_path / "c.png"
    assert runner.invoke(app, ["crops", str(x264_clip), "--out", str(png), "-m", "eraque-student"]).exit_code == 0
    assert png.stat().st_mode & 0o777 == 0o644


def test_out_takes_its_format_from_its_name_and_options_out_of_range_are_refused(clips, tmp_path):
    shot = str(clips / "shot.png")
    for name, check in (("r.csv", lambda t: t.startswith("path,")), ("r.jsonl", lambda t: json.loads(t)["path"]),
                        ("r.json", lambda t: json.loads(t)[0]["path"])):
        done = invoke("score", shot, "-m", "niqe", "--out", str(tmp_path / name))
        assert done.exit_code == 0 and check((tmp_path / name).read_text()), name
    for args in (["score", shot, "--batch-size", "0"], ["eval", shot, shot, "--bootstrap", "-5"]):
        done = runner.invoke(app, args)
        assert done.exit_code == 2 and "Invalid value" in done.output, args


def test_a_reference_at_another_frame_rate_is_refused(clips, tmp_path):
    fast = clipgen.make_clip(tmp_path / "ref20.mkv", codec="libx264", size=(192, 144), fps=20, seconds=1.0,
                             source="mandelbrot", extra=["-crf", "0"])
    done = invoke("score", str(clips / "dist.mp4"), "-m", "psnr", "--ref", str(fast))
    assert done.exit_code == 1 and "reference is 20 fps" in done.output and "is 10 fps" in done.output
    # a still picture of the same size as the reference of a video (or the other way round) is another kind of input
    still = tmp_path / "still.png"
    Image.fromarray(np.zeros((144, 192, 3), np.uint8)).save(still)
    for path, ref, kind in ((clips / "dist.mp4", still, "an image"), (still, clips / "dist.mp4", "a video")):
        done = invoke("score", str(path), "-m", "psnr", "--ref", str(ref))
        assert done.exit_code == 1 and f"{ref}: the reference is {kind} and {path} is not" in done.output, done.output


@pytest.mark.parametrize("sample", ["fps:5", "uniform:4"])
def test_a_reference_with_more_frames_is_refused_before_any_frame_is_compared(clips, tmp_path, sample):
    """A 2 s reference for a 1 s clip: by index the first second would be compared and the rest dropped (fps:N),
    or other moments compared (uniform:K picks by each clip's own count)."""
    longer = clipgen.make_clip(tmp_path / "ref2s.mkv", codec="libx264", size=(192, 144), fps=10, seconds=2.0,
                               source="mandelbrot", extra=["-crf", "0"])
    out = tmp_path / "scores.jsonl"
    done = invoke("score", str(clips / "dist.mp4"), "-m", "psnr", "--ref", str(longer), "-s", sample, "--out", str(out))
    assert done.exit_code == 1 and "reference has 20 frames" in done.output and "has 10:" in done.output
    assert not out.exists()


def test_the_same_picture_in_another_memory_layout_scores_the_same():
    from gameqa.api import load
    from gameqa.models.classical.luma import luma

    picture = np.random.default_rng(3).integers(0, 256, (144, 192, 3)).astype(np.uint8)
    for limited in (True, False):  # BT.601 sums land on .5 exactly: another summation order rounded them otherwise
        np.testing.assert_array_equal(luma(picture, limited=limited), luma(np.asfortranarray(picture), limited=limited))
    for model in ("niqe", "brisque"):
        scorer = load(model)
        assert scorer.score(picture).overall == scorer.score(np.asfortranarray(picture)).overall, model


def test_demo_with_a_full_reference_model_says_it_needs_a_reference():
    done = runner.invoke(app, ["demo", "-m", "psnr"])
    assert done.exit_code == 2 and "'psnr' is full-reference: the demo clip has no reference" in done.output
    assert "scoring the bundled clip" not in done.output


def _leaf_commands(cmd, path):
    """(command words, command) for every command under ``cmd`` (typer's groups, their subgroups)."""
    if hasattr(cmd, "list_commands"):
        ctx = type(cmd).context_class(cmd)
        for name in cmd.list_commands(ctx):
            yield from _leaf_commands(cmd.get_command(ctx, name), path + [name])
    else:
        yield path, cmd


def test_every_command_has_a_one_line_summary_and_every_option_a_help_text():
    import typer

    commands = list(_leaf_commands(typer.main.get_command(app), ["gameqa"]))
    assert len(commands) > 30 and any(p[1:] == ["corpus", "blocks"] for p, _ in commands)
    problems = []
    for path, cmd in commands:
        summary = (cmd.help or "").strip().split("\n\n")[0]
        if not summary or "\n" in summary:  # the command lists show the first paragraph, line breaks and all
            problems.append(f"{' '.join(path)}: summary {summary[:50]!r} is not one line")
        problems += [f"{' '.join(path)} {'/'.join(p.opts)}: no help text" for p in cmd.params
                     if p.name != "help" and not (getattr(p, "help", None) or "").strip()]
    assert not problems, "\n".join(problems)
