"""`gameqa bench logo` on the tiny real corpus of test_eraque: a run trained without game_b scores game_b's clips;
a game without a run is listed as such; a run that saw the game in training is refused; a run stopped before its
last step is listed as unfinished and not counted, unless asked for."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from test_eraque import corpus, quiet, tiny_config  # noqa: E402,F401  (corpus is a fixture)


def test_bench_logo_scores_each_game_with_the_runs_that_held_it_out(corpus, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from gameqa.cli import app
    from gameqa.evaluate.runs import run_scores
    from gameqa.train.trainer import Trainer

    held = Trainer(tiny_config(corpus, tmp_path / "b", ["train.max_steps=2", "name=logo-b", 'data.logo_game="game_b"']),
                   log=quiet).fit().run_dir
    everything = Trainer(tiny_config(corpus, tmp_path / "all", ["train.max_steps=1", "name=all"]), log=quiet).fit().run_dir
    manifest = corpus / "manifests" / "corpus.csv"
    png = tmp_path / "logo.png"
    args = ["bench", "logo", "--run", f"game_b={held}", "--manifest", str(manifest), "--bar", "0.5",
            "--json", str(tmp_path / "logo.json"), "--plot", str(png)]
    done = CliRunner().invoke(app, args[:-1] + ["/proc/logo.png"])  # a place that takes no file: a GameQAError
    assert done.exit_code != 0 and str(done.exception).startswith("/proc/logo.png: cannot write (")  # (main: a line)
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    result = json.loads((tmp_path / "logo.json").read_text())
    assert set(result["games"]) == {"game_a", "game_b"} and result["games"]["game_a"]["runs"] == []
    b = result["games"]["game_b"]
    expected = run_scores(held, manifest, "test", logo_game="game_b")  # every game_b clip, all its splits
    assert b["clips"] == 9 == len(expected.clip_ids)
    # the predictions cached in the run folder are for the clips they score, not only the manifest's path: a
    # manifest rebuilt in place with a clip of another game fewer keeps them (nothing scored again); one with a
    # game_b clip fewer is scored again
    text = manifest.read_text()
    try:
        lines = text.splitlines(keepends=True)
        other = next(i for i, line in enumerate(lines) if i and "game_a" in line)
        manifest.write_text("".join(lines[:other] + lines[other + 1:]))
        seen = []
        kept = run_scores(held, manifest, "test", logo_game="game_b", clip_progress=lambda *c: seen.append(c))
        assert seen == [] and kept.predictions == expected.predictions
        dropped = next(i for i, line in enumerate(lines) if i and "game_b" in line)
        manifest.write_text("".join(lines[:dropped] + lines[dropped + 1:]))
        seen = []  # and the clips are counted as they are scored (what the commands' progress bars show)
        fresh = run_scores(held, manifest, "test", logo_game="game_b", clip_progress=lambda *c: seen.append(c))
        assert len(fresh.clip_ids) == 8 and seen == [(i, 8) for i in range(1, 9)]
    finally:
        manifest.write_text(text)
    assert b["srocc"] == pytest.approx(expected.metrics["srocc"]) and b["passes"] == (b["srocc"] >= 0.5)
    low, high = b["runs"][0]["srocc_ci"]
    assert low <= b["srocc"] <= high
    assert result["every_game_passes"] is False  # game_a has no run
    assert "no run" in done.output and "every game at or over 0.50: no" in done.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --checkpoint last scores each run's last.pt: here a copy of the run whose last.pt holds other weights
    import shutil

    from gameqa.train.evaluation import evaluate_split

    other = tmp_path / "logo-b-other-last"
    shutil.copytree(held, other)
    shutil.copy(everything / "last.pt", other / "last.pt")
    last = CliRunner().invoke(app, ["bench", "logo", "--run", f"game_b={other}", "--manifest", str(manifest),
                                    "--checkpoint", "last", "--json", str(tmp_path / "last.json")])
    assert last.exit_code == 0 and "last.pt" in last.output, last.output
    want = evaluate_split(str(everything / "last.pt"), manifest, "test", logo_game="game_b", bootstrap=0)
    got = json.loads((tmp_path / "last.json").read_text())
    scored_last = run_scores(other, manifest, "test", logo_game="game_b", checkpoint="last")  # from its cache now
    assert scored_last.predictions == pytest.approx(want.predictions)
    assert scored_last.predictions != pytest.approx(run_scores(other, manifest, "test", logo_game="game_b").predictions)
    assert got["checkpoint"] == "last" and got["games"]["game_b"]["srocc"] == pytest.approx(scored_last.metrics["srocc"])
    assert (other / "predictions-test-logo-game_b-last.json").is_file()
    bad = CliRunner().invoke(app, ["bench", "logo", "--run", f"game_b={held}", "--manifest", str(manifest),
                                   "--checkpoint", "middle"])
    assert bad.exit_code == 2 and "--checkpoint 'middle' is not one of best, last" in bad.output

    # a run that trained on the game cannot stand for it held out; unknown games and bad specs are named
    odd = tmp_path / "odd-run"  # a folder whose config.json is not a run's: one line, no traceback
    odd.mkdir()
    (odd / "config.json").write_text("[]")
    for spec, message in ((f"game_b={odd}", "cannot tell which game this run held out"),
                          (f"game_b={everything}", "trained with data.logo_game = '', so it saw game_b"),
                          (f"game_a={held}", "trained with data.logo_game = 'game_b', so it saw game_a"),
                          (f"game_z={held}", "no game 'game_z' here"),
                          (f"game_b={tmp_path}/nothing*", "matches no run folder")):
        bad = CliRunner().invoke(app, ["bench", "logo", "--run", spec, "--manifest", str(manifest)])
        assert bad.exit_code == 1 and message in " ".join(bad.output.split()), (spec, bad.output)


class _Stopped(Exception):
    """Stands for the chain being killed: raised from the trainer's log at its second validation."""


def test_a_run_stopped_mid_training_is_listed_not_counted(corpus, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from gameqa.cli import app
    from gameqa.evaluate.runs import training_state
    from gameqa.train.trainer import Trainer

    validations = []

    def stop_at_second_validation(message: str) -> None:
        if ": val SROCC" in message:
            validations.append(message)
            if len(validations) == 2:
                raise _Stopped

    cfg = tiny_config(corpus, tmp_path / "b", ["train.epochs=3", "train.validate_every=1", 'data.logo_game="game_b"'])
    trainer = Trainer(cfg, log=stop_at_second_validation)
    with pytest.raises(_Stopped):
        trainer.fit()
    run = trainer.run_dir
    state = training_state(run)
    assert (run / "best.pt").is_file() and not state["finished"]  # best.pt of epoch 1, last.pt inside epoch 2
    assert state["epochs"] == 3 and state["epoch"] == 1 and state["step"] > 0
    manifest = corpus / "manifests" / "corpus.csv"
    args = ["bench", "logo", "--run", f"game_b={run}", "--manifest", str(manifest),
            "--json", str(tmp_path / "logo.json")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    b = json.loads((tmp_path / "logo.json").read_text())["games"]["game_b"]
    assert b["runs"] == [] and [u["run"] for u in b["unfinished"]] == [str(run)]
    assert b["unfinished"][0]["state"] == f"step {state['step']}, 1 of 3 epochs done"
    assert "unfinished" in done.output and "no finished" in done.output
    interim = CliRunner().invoke(app, [*args, "--include-unfinished"])
    assert interim.exit_code == 0, interim.output
    b = json.loads((tmp_path / "logo.json").read_text())["games"]["game_b"]
    assert len(b["runs"]) == 1 and b["runs"][0]["finished"] is False and b["srocc"] == b["runs"][0]["srocc"]
    # resumed to its end, it counts
    Trainer(cfg, log=quiet).fit()
    assert training_state(run)["finished"]
    done = CliRunner().invoke(app, args)
    b = json.loads((tmp_path / "logo.json").read_text())["games"]["game_b"]
    assert done.exit_code == 0 and b["unfinished"] == [] and b["runs"][0]["finished"] is True
