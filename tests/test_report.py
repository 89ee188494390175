"""``gameqa bench all --quick`` on the tiny real corpus of test_eraque: tiny real training runs under the names the
report looks for, an exported teacher, the report files, numbers that agree between report.md and results.json,
notes for missing inputs, the README table, and a bad manifest that leaves nothing behind."""
from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_eraque import corpus, quiet, tiny_config  # noqa: E402,F401  (corpus is a fixture)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(corpus, tmp_path_factory):  # noqa: F811
    """Three tiny runs (two seeds of the default loss, one L1-only), a leave-one-game-out run for game_b, a run
    named for game_a that trained on every game (refused), an unfinished student folder, the teacher exported from
    the first run; then `bench all --quick`."""
    from typer.testing import CliRunner

    from gameqa.cli import app
    from gameqa.export.onnx import export_onnx
    from gameqa.train.trainer import Trainer

    base = tmp_path_factory.mktemp("report")
    runs = base / "runs"
    specs = {"abl-default-s0": ["seed=0"], "abl-default-s1": ["seed=1"],
             "abl-ablation_l1-s0": ["seed=0", "loss.rank_weight=0.0"],
             "eraque-logo-game_b": ["seed=0", 'data.logo_game="game_b"'],
             "eraque-logo-game_b-s1": ["seed=1", 'data.logo_game="game_b"'],  # a second seed: --logo-runs glob
             "eraque-logo-game_a": ["seed=0"]}  # named for game_a, but trained on every game: not used
    for name, more in specs.items():
        cfg = tiny_config(corpus, base / "work" / name, [f'out_dir="{runs / name}"', "train.max_steps=2", *more])
        Trainer(cfg, log=quiet).fit()
    (runs / "eraque-student-s0").mkdir()  # a student still training: no best.pt yet
    teacher = base / "teacher"
    export_onnx(runs / "abl-default-s0" / "best.pt", teacher, name="teacher-test")
    # The fixture's VMAF column is constant; here it is the label's source, as in the real corpus (mos = VMAF / 20).
    rows = list(csv.DictReader(io.StringIO((corpus / "manifests" / "corpus.csv").read_text())))
    for row in rows:
        row["vmaf"] = f"{20 * float(row['mos']):.4f}"
    manifest = corpus / "manifests" / "vmaf-labels.csv"  # this module's own copy of the fixture corpus
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = base / "out"
    args = ["bench", "all", "--quick", "--output", str(out), "--manifest", str(manifest),
            "--runs-dir", str(runs), "--teacher", str(teacher), "--frames-cache", str(base / "frames"),
            "--model", "niqe", "--model", "ssim", "--model", "no-such-model", "--no-store"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    return {"out": out, "runs": runs, "base": base, "output": done.output, "manifest": manifest,
            "results": json.loads((out / "results.json").read_text()), "md": (out / "report.md").read_text()}


def test_report_files_and_plots(report):
    out = report["out"]
    assert {"report.md", "report.html", "results.json", "scatter_test.png", "logo.png", "ablation.png",
            "quantiser.png"} <= \
        {p.name for p in out.iterdir()}
    pngs = sorted(out.glob("*.png"))
    for png in pngs:
        from PIL import Image

        assert png.read_bytes()[:8] == PNG_MAGIC
        with Image.open(png) as im:
            im.verify()
        assert png.name in report["md"] and f'src="{png.name}"' in (out / "report.html").read_text()
    assert not list(out.parent.glob(".out-*"))  # the staging folder was renamed, not left behind
    assert not list(report["runs"].rglob("predictions-*.json"))  # --quick never writes into run folders


def test_accuracy_numbers_match_results_and_are_measured(report):
    from gameqa.evaluate import srocc

    res, md = report["results"], report["md"]
    acc = res["accuracy"]
    assert acc["split"] == "test" and acc["clips"] == len(acc["mos"]) >= 3
    assert set(acc["models"]) == {"registry:ssim", "teacher", "vmaf"}  # NIQE cannot score 128x96 frames: a note
    assert "Split: test, %d clips" % acc["clips"] in md
    for model in acc["models"].values():
        line = next(line for line in md.splitlines() if line.startswith(f"| {model['label']}"))
        numbers = [float(x) for x in re.findall(r"-?\d+\.\d{3}", line)]
        table = model["table"]
        expected = []
        for key in ("SROCC", "KROCC", "PLCC", "PLCC_mapped", "RMSE_mapped"):
            row = table[key]
            expected += [row[k] for k in ("value", "ci_low", "ci_high") if row[k] is not None]
        assert numbers == pytest.approx([round(v, 3) for v in expected], abs=5e-4), model["key"]
        signed = -np.array(model["predictions"]) if model["sign_flipped"] else np.array(model["predictions"])
        assert table["SROCC"]["value"] == pytest.approx(srocc(signed, acc["mos"]))  # recomputed from the clips
    assert acc["models"]["vmaf"]["table"]["SROCC"]["value"] == pytest.approx(1.0)
    assert "by construction" in md and "full-reference" in md
    assert any("no-such-model" in n for n in acc["notes"])
    assert any(n.startswith("niqe not scored:") and "too small" in n for n in acc["notes"])


def test_runs_sections_and_notes(report):
    res, md = report["results"], report["md"]
    logo = res["logo"]["games"]
    assert logo["game_b"]["run"]["clips"] == logo["game_b"]["clips"] >= 2
    assert logo["game_a"]["run"] is None and "so it saw game_a" in " ".join(md.split())
    assert set(logo["game_b"]["peers"]) == {"registry:ssim", "vmaf"}
    groups = res["ablation"]["groups"]
    default, l1 = groups["L1 + hard rank (default)"], groups["L1 only (ablation)"]
    assert len(default["runs"]) == 2 and len(l1["runs"]) == 1
    assert default["mean"]["srocc"] == pytest.approx(np.mean([r["srocc"] for r in default["runs"]]))
    assert np.isfinite(default["std"]["srocc"]) and l1["std"]["srocc"] is None  # one seed: no sd
    srocc_cell = f"{default['mean']['srocc']:.3f} ± {default['std']['srocc']:.3f}"
    assert srocc_cell in md
    dist = res["distillation"]
    assert dist["groups"] == {}
    assert any("1 unfinished run folder(s) skipped (no best.pt" in n for n in dist["notes"])
    assert any("no finished run matches" in n and "eraque-student-plain-s*" in n for n in dist["notes"])
    assert "Published figures of reference systems" in md and "0.968" in md and "GAMIVAL" in md
    assert res["aesthetic"]["measured"] is False and "clive-quality-spread.md" in md
    speed = dist["speed"]
    if speed is not None:  # gameqa.bench.models present: measured here, never copied
        assert {r["key"] for r in speed["models"]} == {"teacher"}  # no-reference models that were scored
        assert all(r["ms_best"] > 0 for r in speed["models"])
        assert (report["out"] / "tradeoff.png").is_file()


def test_readme_table_comes_from_results(report):
    from typer.testing import CliRunner

    from gameqa.cli import app

    done = CliRunner().invoke(app, ["bench", "readme-table", "--report", str(report["out"])])
    assert done.exit_code == 0, done.output
    table_lines = [line for line in done.output.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 2 + len(report["results"]["accuracy"]["models"])
    for line in table_lines:
        assert line in report["md"]
    bad = CliRunner().invoke(app, ["bench", "readme-table", "--report", str(report["base"])])
    assert bad.exit_code == 1 and "not a gameqa report" in bad.output


def test_readme_table_is_written_between_the_markers(report, tmp_path):
    from typer.testing import CliRunner

    from gameqa.bench.report import README_END, README_START, readme_table
    from gameqa.cli import app

    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n## Results\n{README_START}\nold table\n{README_END}\n\nmore text\n")
    done = CliRunner().invoke(app, ["bench", "readme-table", "--report", str(report["out"]), "--write", str(readme)])
    assert done.exit_code == 0, done.output
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# title") and text.endswith(f"{README_END}\n\nmore text\n")
    assert readme_table(report["out"]) in text
    unmarked = tmp_path / "plain.md"
    unmarked.write_text("no markers\n")
    bad = CliRunner().invoke(app, ["bench", "readme-table", "--report", str(report["out"]), "--write", str(unmarked)])
    assert bad.exit_code == 1 and "marker" in bad.output and unmarked.read_text() == "no markers\n"


def test_readme_table_of_a_damaged_report_or_readme_is_one_line(report, tmp_path):
    from typer.testing import CliRunner

    from gameqa.cli import app

    cases = []
    for k, content in enumerate(("[]", '{"accuracy": {}}', '{"accuracy": {"models": 3}}')):
        folder = tmp_path / f"r{k}"
        folder.mkdir()
        (folder / "results.json").write_text(content)
        cases.append((["--report", str(folder)], "not a gameqa report"))
    (tmp_path / "a-file").write_text("not a folder\n")
    for name in ("a-file", "missing"):
        cases.append((["--report", str(tmp_path / name)], f"{tmp_path / name}: no report folder"))
    latin = tmp_path / "latin.md"
    latin.write_bytes(b"caf\xe9\n")
    cases.append((["--report", str(report["out"]), "--write", str(latin)], "is not UTF-8 text"))
    for args, message in cases:
        done = CliRunner().invoke(app, ["bench", "readme-table", *args])
        assert done.exit_code == 1 and message in done.output and "Traceback" not in done.output, done.output
    assert latin.read_bytes() == b"caf\xe9\n"


def test_bad_manifest_is_one_line_and_writes_nothing(corpus, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from gameqa.cli import app

    bad = tmp_path / "manifests" / "corpus.csv"
    bad.parent.mkdir()
    text = (corpus / "manifests" / "corpus.csv").read_text().splitlines()
    bad.write_text("\n".join([text[0].replace(",mos,", ",score,")] + text[1:]) + "\n")
    out = tmp_path / "report"
    done = CliRunner().invoke(app, ["bench", "all", "--quick", "--output", str(out), "--manifest", str(bad),
                                    "--root", str(corpus), "--runs-dir", str(tmp_path / "none")])
    assert done.exit_code == 1
    assert "missing columns ['mos']" in done.output and "Traceback" not in done.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["manifests"]


def test_bad_logo_options_are_one_line_and_write_nothing(corpus, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from gameqa.cli import app

    out = tmp_path / "report"
    base = ["bench", "all", "--quick", "--output", str(out), "--manifest", str(corpus / "manifests" / "corpus.csv"),
            "--runs-dir", str(tmp_path / "none")]
    done = CliRunner().invoke(app, base + ["--logo-runs", "eraque-logo8sj-*"])
    assert done.exit_code == 2 and "--logo-runs 'eraque-logo8sj-*' has no {game} in it" in done.output
    done = CliRunner().invoke(app, base + ["--logo-crop-mode", "centre"])
    assert done.exit_code == 2 and "--logo-crop-mode 'centre': use grid, texture, typical" in done.output
    assert not out.exists()


def test_an_output_folder_that_is_no_earlier_report_is_refused_and_kept(corpus, tmp_path, monkeypatch):  # noqa: F811
    """The report replaces --output as a whole: a folder of the user's files, or the current folder, is refused."""
    from typer.testing import CliRunner

    from gameqa.cli import app

    mine = tmp_path / "precious"
    mine.mkdir()
    (mine / "thesis.tex").write_text("important")
    base = ["bench", "all", "--quick", "--manifest", str(corpus / "manifests" / "corpus.csv"),
            "--runs-dir", str(tmp_path / "none"), "--model", "ssim", "--no-store"]
    done = CliRunner().invoke(app, base + ["--output", str(mine)])
    assert done.exit_code == 1 and "not an earlier report (it holds thesis.tex)" in done.output
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"] and sorted(p.name for p in tmp_path.iterdir()) == ["precious"]
    monkeypatch.chdir(mine)
    done = CliRunner().invoke(app, base + ["--output", "."])
    assert done.exit_code == 1 and "current folder" in done.output and [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_full_mode_scores_runs_through_their_prediction_cache(report, tmp_path):
    """Without --quick: every test clip, the runs scored by compare_groups / run_scores (cached in the run
    folders), and an existing report folder replaced whole."""
    from typer.testing import CliRunner

    from gameqa.cli import app
    from pathlib import Path

    from gameqa.evaluate.runs import compare_groups, run_scores

    runs, base = report["runs"], report["base"]
    out = tmp_path / "full"
    out.mkdir()
    (out / "results.json").write_text("{}")  # an older report, with a plot the new one does not draw
    (out / "stale.png").write_bytes(b"from an older report")
    args = ["bench", "all", "--output", str(out), "--manifest", str(report["manifest"]),
            "--runs-dir", str(runs), "--frames-cache", str(base / "frames"), "--model", "ssim", "--bootstrap", "20",
            "--no-speed", "--no-store", "--logo-runs", "eraque-logo-{game}*", "--logo-crop-mode", "texture"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert not (out / "stale.png").exists() and (out / "report.md").is_file()
    res = json.loads((out / "results.json").read_text())
    assert res["quick"] is False and res["accuracy"]["clips"] == 3  # the fixture's whole test split
    assert (runs / "abl-default-s0" / "predictions-test.json").is_file()
    logo_b = res["logo"]["games"]["game_b"]
    assert logo_b["run"]["clips"] == 9  # every clip of the held-out game
    # The glob took both seeds of game_b (each scored with texture crops and cached in its folder) and averaged
    # them; the folder named for game_a that trained on every game matched too, and was refused.
    per_run = logo_b["run"]["per_run"]
    assert [Path(r["run"]).name for r in per_run] == ["eraque-logo-game_b", "eraque-logo-game_b-s1"]
    assert logo_b["run"]["seeds"] == 2
    assert logo_b["run"]["srocc"] == pytest.approx(np.mean([r["srocc"] for r in per_run]))
    for r in per_run:
        assert list(Path(r["run"]).glob("predictions-test-logo-game_b*texture*.json"))
        assert r["srocc"] == pytest.approx(run_scores(r["run"], report["manifest"], "test", logo_game="game_b",
                                                      crop_mode="texture").metrics["srocc"])
    assert res["logo"]["games"]["game_a"]["run"] is None
    assert any("eraque-logo-game_a is not used" in n for n in res["logo"]["notes"])
    for table in [*[r["table"] for r in per_run], *[p["table"] for p in logo_b["peers"].values()]]:
        assert table["SROCC"]["ci_low"] <= table["SROCC"]["value"] <= table["SROCC"]["ci_high"]
        assert "KROCC" in table and "RMSE_mapped" in table
    md = (out / "report.md").read_text()
    assert "| game_b | ERAQUE (game held out), eraque-logo-game_b-s1 |" in md
    assert "every measure with its 95% percentile bootstrap" in md and "(2 runs)" in md
    direct = compare_groups({"x": [runs / "abl-default-s0", runs / "abl-default-s1"]}, report["manifest"])
    assert res["ablation"]["groups"]["L1 + hard rank (default)"]["mean"]["srocc"] == \
        pytest.approx(direct["x"]["mean"]["srocc"])
    assert any("speed not measured: --no-speed" in n for n in res["distillation"]["notes"])


def test_prediction_store_makes_a_rerun_reuse_every_clip(report, tmp_path):
    """With --store, a second identical run scores nothing anew and reports the same numbers; a different frame
    policy is a different identity and is scored anew."""
    from typer.testing import CliRunner

    from gameqa.cli import app

    store = tmp_path / "store"
    base = ["bench", "all", "--quick", "--manifest", str(report["manifest"]), "--runs-dir", str(report["runs"]),
            "--frames-cache", str(report["base"] / "frames"), "--model", "ssim", "--no-speed", "--store", str(store)]
    def run(k: int, sample: str) -> dict:
        done = CliRunner().invoke(app, [*base, "--sample", sample, "--output", str(tmp_path / f"r{k}")])
        assert done.exit_code == 0, done.output
        return json.loads((tmp_path / f"r{k}" / "results.json").read_text())

    first = run(0, "uniform:2")
    assert first["prediction_store"]["reused"] == {}
    identities = {json.loads(f.read_text())["identity"]: f for f in store.glob("*.json")}
    ssim = [f for i, f in identities.items() if i.startswith("model ssim ")]
    assert len(ssim) == 1 and all(i.endswith("| sample uniform:2") for i in identities)
    assert any(i.startswith("checkpoint ") for i in identities)  # the runs' checkpoints are stored too
    again = run(1, "uniform:2")
    reused = again["prediction_store"]["reused"]
    assert reused["ssim"] == len(json.loads(ssim[0].read_text())["clips"]) > 0
    assert again["prediction_store"]["scoring_s"] == {}  # nothing scored anew
    for key, model in first["accuracy"]["models"].items():
        assert again["accuracy"]["models"][key]["predictions"] == model["predictions"]
        assert again["accuracy"]["models"][key]["table"] == model["table"]
    other = run(2, "uniform:3")
    assert other["prediction_store"]["reused"] == {}
    assert len(list(store.glob("*.json"))) == 2 * len(identities)


def test_a_model_folder_given_with_model_is_scored_beside_the_registry(report, tmp_path):
    """--model takes model folders too (e.g. the full-reference variant); learned models stay out of the
    leave-one-game-out peers, which are only the untrained metrics and VMAF."""
    from typer.testing import CliRunner

    from gameqa.cli import app

    teacher = report["base"] / "teacher"
    out = tmp_path / "r"
    done = CliRunner().invoke(app, ["bench", "all", "--quick", "--output", str(out), "--manifest", str(report["manifest"]),
                                    "--runs-dir", str(report["runs"]), "--frames-cache", str(report["base"] / "frames"),
                                    "--model", "ssim", "--model", str(teacher), "--no-speed", "--no-store"])
    assert done.exit_code == 0, done.output
    res = json.loads((out / "results.json").read_text())
    keys = set(res["accuracy"]["models"])
    folder_key = f"folder:{teacher.resolve()}"
    assert folder_key in keys and "registry:ssim" in keys
    assert res["accuracy"]["models"][folder_key]["label"].startswith("teacher-test")
    assert set(res["logo"]["peers"]) == {"registry:ssim", "vmaf"}


def test_an_unwritable_store_is_one_line_and_writes_no_report(report, tmp_path):
    from typer.testing import CliRunner

    from gameqa.cli import app

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = tmp_path / "r"
    done = CliRunner().invoke(app, ["bench", "all", "--quick", "--output", str(out), "--manifest", str(report["manifest"]),
                                    "--runs-dir", str(report["runs"]), "--frames-cache", str(report["base"] / "frames"),
                                    "--model", "ssim", "--no-speed", "--store", str(blocker / "store")])
    assert done.exit_code == 1
    assert "cannot make the prediction store" in done.output and len(done.output.strip().splitlines()) <= 3
    assert not out.exists() and blocker.read_text() == "not a folder"


def test_quantiser_section_matches_bench_qp(report):
    """The report's quantiser section is `gameqa bench qp` on the same manifest: the same numbers, in the table."""
    from gameqa.evaluate.qp_bench import qp_bench

    res, md = report["results"]["quantiser"], report["md"]
    assert "## The quantiser alone (no pixels)" in md
    again = qp_bench(report["manifest"], bootstrap=100)
    assert set(res["games"]) == {"game_a", "game_b"} == set(again["games"])
    for game, e in res["games"].items():
        assert e["srocc"] == pytest.approx(again["games"][game]["srocc"])
        assert f"| {game} | every other game | {e['clips']} | {e['srocc']:.3f} [" in md
    rows = csv.DictReader(report["manifest"].read_text().splitlines())
    assert res["test"]["clips"] == sum(1 for r in rows if r["split"] == "test")
