"""Tests of gameqa.subjective: vote readers, MOS, BT.500 screening, the MLE subject model.

The real-data tests use Netflix's public NFLX rating files in ../shared/datasets/ratings
and compare with the `sureal` package (PyPI, Apache-2.0) run on the same votes.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from gameqa.errors import ConfigError
from gameqa.subjective import (VoteTable, bt500_screen, mle_subject_model, mos,
                               print_mos_table, read_sureal_dataset, read_votes_csv,
                               write_manifest)

RATINGS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ratings"
NFLX_FILES = ["NFLX_dataset_public_raw.py", "NFLX_dataset_public_raw_last4outliers.py",
              "NFLX_dataset_public_raw_PARTIAL.py"]


def nflx_path(name: str) -> Path:
    path = RATINGS_DIR / name
    if not path.is_file():
        pytest.skip(f"NFLX rating file {path} is absent (shared/datasets/ratings not laid out)")
    return path


def sureal_modules():
    """sureal's reader and models; skip when the package is not installed."""
    pytest.importorskip("sureal", reason="the sureal package (PyPI 'sureal') is not installed")
    from sureal.dataset_reader import RawDatasetReader
    from sureal import subjective_model
    return RawDatasetReader, subjective_model


def sureal_reader(table: VoteTable, keyed: bool = False):
    """A sureal dataset reader over the same votes (no file is imported or executed)."""
    raw_dataset_reader, _ = sureal_modules()
    content_numbers = {c: k for k, c in enumerate(dict.fromkeys(table.content_ids))}
    ref_videos = [{"content_id": k, "content_name": c, "path": f"ref/{c}"}
                  for c, k in content_numbers.items()]
    dis_videos = []
    for j, stimulus in enumerate(table.stimulus_ids):
        row = table.scores[j]
        if keyed:
            votes = {o: float(s) for o, s in zip(table.observer_ids, row) if not np.isnan(s)}
        else:
            votes = [float(s) for s in row]
        dis_videos.append({"asset_id": j, "content_id": content_numbers[table.content_ids[j]],
                           "os": votes, "path": f"dis/{stimulus}"})
    dataset = types.SimpleNamespace(dataset_name="t", ref_videos=ref_videos,
                                    dis_videos=dis_videos, ref_score=5.0)
    return raw_dataset_reader(dataset)


def run_sureal(model_class, reader, **kwargs):
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return model_class(reader).run_modeling(**kwargs)


# --- readers ----------------------------------------------------------------------------

def test_read_nflx_files_shapes_and_known_votes():
    raw = read_sureal_dataset(nflx_path(NFLX_FILES[0]))
    assert raw.scores.shape == (79, 26) and raw.name == "NFLX_public"
    assert len(set(raw.content_ids)) == 9 and raw.num_votes == 79 * 26
    # asset 9 (BigBuckBunny_20_288_375) as written in the file
    assert raw.stimulus_ids[0] == "9" and raw.content_ids[0] == "0"
    assert raw.stimulus_info[0]["path"].endswith("/dis/BigBuckBunny_20_288_375.yuv")
    assert raw.stimulus_info[0]["content_name"] == "BigBuckBunny"
    np.testing.assert_array_equal(raw.scores[0], [1, 1, 1, 2, 1, 1, 1, 1, 1, 3, 1, 2, 2,
                                                  1, 1, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 2])
    outliers = read_sureal_dataset(nflx_path(NFLX_FILES[1]))
    assert outliers.scores.shape == (79, 30)
    np.testing.assert_array_equal(outliers.scores[:, :26], raw.scores)
    partial = read_sureal_dataset(nflx_path(NFLX_FILES[2]))
    assert partial.scores.shape == (51, 26)
    assert not {"0", "5"} & set(partial.content_ids)


def test_sureal_reader_missing_votes_and_never_executes(tmp_path):
    good = tmp_path / "votes_dataset.py"
    good.write_text(
        "import numpy as np\n"
        "dataset_name = 'tiny'\n"
        "ref_dir = 'r'\n"
        "ref_videos = [{'content_id': 0, 'content_name': 'A', 'path': ref_dir + '/a.yuv'}]\n"
        "dis_videos = [\n"
        " {'asset_id': 10, 'content_id': 0, 'os': {'bob': 4, 'al': float('nan'), 'cy': -1 + 4}},\n"
        " {'asset_id': 11, 'content_id': 0, 'os': {'bob': nan, 'al': 2.0, 'cy': None}},\n"
        " {'asset_id': 12, 'content_id': 0, 'os': {'bob': np.nan, 'al': 5}},\n"
        "]\n")
    table = read_sureal_dataset(good)
    assert table.observer_ids == ("al", "bob", "cy")  # sorted, as sureal orders them
    assert table.stimulus_ids == ("10", "11", "12")
    expected = np.array([[np.nan, 4, 3], [2, np.nan, np.nan], [5, np.nan, np.nan]])
    np.testing.assert_array_equal(table.scores, expected)
    assert table.stimulus_info[0]["content_name"] == "A"

    marker = tmp_path / "ran"
    evil = tmp_path / "evil_dataset.py"
    evil.write_text(f"dis_videos = [{{'os': [open({str(marker)!r}, 'w').write('x')]}}]\n")
    with pytest.raises(ConfigError, match="not a literal"):
        read_sureal_dataset(evil)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="dis_videos"):
        (tmp_path / "empty.py").write_text("dataset_name = 'x'\n")
        read_sureal_dataset(tmp_path / "empty.py")


def test_read_votes_csv_long_format_and_errors(tmp_path):
    path = tmp_path / "votes.csv"
    path.write_text("stimulus,observer,score,content\n"
                    "s1,o1,4,c1\ns1,o2,5,c1\ns2,o1,2,c1\ns2,o2,,c1\ns3,o2,3,c2\n")
    table = read_votes_csv(path, scale=(1, 5))
    assert table.stimulus_ids == ("s1", "s2", "s3") and table.observer_ids == ("o1", "o2")
    assert table.content_ids == ("c1", "c1", "c2")
    np.testing.assert_array_equal(table.scores, [[4, 5], [2, np.nan], [np.nan, 3]])

    path.write_text("stimulus,observer,score\ns1,o1,4\ns1,o1,5\n")
    with pytest.raises(ConfigError, match="voted twice") as err:
        read_votes_csv(path)
    assert str(err.value).startswith(str(path))
    path.write_text("stimulus,observer,score\ns1,o1,great\n")
    with pytest.raises(ConfigError, match="line 2: score 'great' is not a number"):
        read_votes_csv(path)
    path.write_text("stimulus,score\ns1,4\n")
    with pytest.raises(ConfigError, match="missing column"):
        read_votes_csv(path)
    path.write_text("stimulus,observer,score\ns1,o1,7\n")
    with pytest.raises(ConfigError, match="outside the scale"):
        read_votes_csv(path, scale=(1, 5))



def test_votes_csv_rows_that_do_not_fit_the_header_are_refused_with_their_real_line(tmp_path):
    path = tmp_path / "votes.csv"
    for rows, problem in (("s1,o1,4\ns1,o2\n", "line 3: 2 field"),  # a vote cut short
                          ("s1,o1,4,extra\n", "line 2: 4 field"),
                          ("\n\ns1,o1,4\ns1,o2,four\n", "line 5: score 'four'"),  # blank lines still count
                          ("s1,o1,\ns1,o2,nan\n", "no votes")):
        path.write_text("stimulus,observer,score\n" + rows)
        with pytest.raises(ConfigError, match=problem):
            read_votes_csv(path)
    # Excel's "CSV UTF-8" (a byte-order mark) and a spreadsheet's trailing empty cells read as plain CSV
    path.write_bytes("\ufeffstimulus,observer,score\r\ns1,o1,4,,\r\ns1,o2,5\r\n".encode("utf-8"))
    table = read_votes_csv(path)
    assert table.stimulus_ids == ("s1",) and table.observer_ids == ("o1", "o2")


def test_analyze_writes_the_manifest_and_plot_together_or_neither(tmp_path):
    from typer.testing import CliRunner

    from gameqa.subjective.cli import study_app

    votes = tmp_path / "votes.csv"
    votes.write_text("stimulus,observer,score\ns1,o1,4\ns1,o2,5\ns2,o1,2\ns2,o2,1\n")
    runner = CliRunner()
    manifest = tmp_path / "out" / "m.csv"
    result = runner.invoke(study_app, ["analyze", str(votes), "--manifest", str(manifest),
                                       "--plot", str(tmp_path / "out" / "p.xyz")])
    assert result.exit_code == 1 and "the plot is a PNG file" in result.output
    assert not manifest.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(study_app, ["analyze", str(votes), "--manifest", str(blocker / "m.csv"),
                                       "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 1 and str(blocker / "m.csv") in result.output
    assert not (tmp_path / "p.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "votes.csv"]
    result = runner.invoke(study_app, ["analyze", str(votes), "--manifest", str(manifest),
                                       "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert manifest.read_text().splitlines()[1].startswith("s1,4.5,")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


# --- MOS ------------------------------------------------------------------------------

def test_mos_and_student_t_interval_by_hand():
    nan = np.nan
    table = VoteTable(("a", "b", "c"), ("1", "2", "3", "4", "5"),
                      np.array([[1, 2, 3, 4, 5], [4, 5, nan, 3, nan], [2, nan, nan, nan, nan]]),
                      ("a", "b", "c"))
    result = mos(table)
    np.testing.assert_allclose(result.mean, [3.0, 4.0, 2.0])
    np.testing.assert_array_equal(result.n, [5, 3, 1])
    # a: var = (4+1+0+1+4)/4 = 2.5; t(0.975, 4) = 2.7764451; half = t * sqrt(2.5) / sqrt(5)
    # b: var = (0+1+1)/2 = 1;       t(0.975, 2) = 4.3026527; half = t / sqrt(3)
    assert result.std[0] == pytest.approx(1.5811388, abs=1e-6)
    assert result.std[1] == pytest.approx(1.0)
    assert result.ci_high[0] - 3.0 == pytest.approx(1.9632432, abs=1e-6)
    assert 3.0 - result.ci_low[0] == pytest.approx(1.9632432, abs=1e-6)
    assert result.ci_high[1] - 4.0 == pytest.approx(2.4841377, abs=1e-6)
    assert math.isnan(result.std[2]) and math.isnan(result.ci_low[2])


# --- BT.500 screening -----------------------------------------------------------------

def screening_table(deviant_votes):
    """20 stimuli, 9 honest observers (votes within 1 of the truth) and one more."""
    truth = np.tile([2.0, 3.0, 4.0, 3.0], 5)
    pattern = np.array([0, 0, 1, -1, 0, 1, -1, 0, 0])
    honest = np.array([truth[j] + np.roll(pattern, j) for j in range(truth.size)])
    scores = np.column_stack([honest, deviant_votes(truth)])
    observers = tuple(f"h{i}" for i in range(9)) + ("odd",)
    return VoteTable(tuple(f"s{j}" for j in range(truth.size)), observers, scores,
                     tuple(f"s{j}" for j in range(truth.size)))


def test_bt500_rejects_an_erratic_observer_but_not_a_biased_one():
    # swings 2.5 points either way: beyond mean +- 2 std on every stimulus, half high, half low
    erratic = screening_table(lambda t: t + np.where(np.arange(t.size) % 2 == 0, 2.5, -2.5))
    result = bt500_screen(erratic)
    assert result.rejected_observer_ids == ("odd",)
    assert result.p_counts[-1] == 10 and result.q_counts[-1] == 10
    assert result.ratio[-1] == pytest.approx(1.0) and result.balance[-1] == pytest.approx(0.0)
    assert np.all(result.p_counts[:-1] + result.q_counts[:-1] == 0)
    assert result.table.num_observers == 9
    np.testing.assert_allclose(result.mos.mean, mos(erratic.without_observers(["odd"])).mean)
    # always 2.5 above: P = 20, Q = 0, so |P-Q|/(P+Q) = 1 >= 0.3 keeps the observer
    biased = screening_table(lambda t: t + 2.5)
    kept = bt500_screen(biased)
    assert kept.rejected_observer_ids == () and kept.p_counts[-1] == 20
    assert kept.q_counts[-1] == 0


def test_bt500_unanimous_stimulus_convention():
    scores = np.array([[5.0, 5, 5, 5], [1, 2, 3, 4]])
    table = VoteTable(("u", "v"), ("a", "b", "c", "d"), scores, ("u", "v"))
    assert np.all(bt500_screen(table).p_counts == 0)
    literal = bt500_screen(table, unanimous_counts_as_outlier=True)
    assert np.all(literal.p_counts == 1) and np.all(literal.q_counts == 1)
    # all four would be rejected (ratio 0.5, balance 0): then nobody is
    assert literal.rejected_observer_ids == ()


@pytest.mark.parametrize("name", NFLX_FILES)
def test_bt500_matches_sureal(name):
    table = read_sureal_dataset(nflx_path(name))
    _, models = sureal_modules()
    reference = run_sureal(models.MosModel, sureal_reader(table), subject_rejection=True)
    expected = tuple(o for o, r in zip(table.observer_ids, reference["observer_rejected"]) if r)
    literal = bt500_screen(table, unanimous_counts_as_outlier=True)
    assert literal.rejected_observer_ids == expected
    np.testing.assert_allclose(literal.ratio, reference["observer_rejected_1st_stats"])
    np.testing.assert_allclose(literal.mos.mean, reference["quality_scores"])
    assert bt500_screen(table).rejected_observer_ids == expected
    if name.endswith("last4outliers.py"):
        # 4 planted outliers (26..29); sureal's BT.500 and ours reject three of them
        assert expected == ("26", "28", "29")


# --- the MLE subject model ------------------------------------------------------------

SUREAL_ATOL = 1e-9


def compare_with_sureal(table, keyed=False):
    _, models = sureal_modules()
    reader = sureal_reader(table, keyed=keyed)
    for model_class, oblivious in [(models.MaximumLikelihoodEstimationModel, False),
                                   (models.MaximumLikelihoodEstimationModelContentOblivious, True)]:
        reference = run_sureal(model_class, reader)
        ours = mle_subject_model(table, content_oblivious=oblivious)
        if keyed:  # sureal sorts keyed observers by name: put ours in that order
            order = [table.observer_ids.index(o) for o in reference["observers"]]
            ours = dataclasses.replace(
                ours, **{f: getattr(ours, f)[order] for f in (
                    "observer_bias", "observer_inconsistency", "observer_bias_std")})
        assert ours.converged and not ours.collapsed
        # the same steps as sureal, so equal to rounding (no safeguard changes a step here)
        np.testing.assert_allclose(ours.quality, reference["quality_scores"], atol=SUREAL_ATOL)
        np.testing.assert_allclose(ours.observer_bias, reference["observer_bias"],
                                   atol=SUREAL_ATOL)
        np.testing.assert_allclose(ours.observer_inconsistency,
                                   reference["observer_inconsistency"], atol=SUREAL_ATOL)
        np.testing.assert_allclose(ours.quality_std, reference["quality_scores_std"],
                                   atol=SUREAL_ATOL)
        np.testing.assert_allclose(ours.observer_bias_std, reference["observer_bias_std"],
                                   atol=SUREAL_ATOL)
        if not oblivious:
            np.testing.assert_allclose(ours.content_ambiguity,
                                       reference["content_ambiguity"], atol=SUREAL_ATOL)


@pytest.mark.parametrize("name", NFLX_FILES)
def test_mle_matches_sureal_on_nflx(name):
    compare_with_sureal(read_sureal_dataset(nflx_path(name)))


def test_mle_matches_sureal_with_missing_votes():
    table = read_sureal_dataset(nflx_path(NFLX_FILES[0]))
    scores = table.scores.copy()
    rng = np.random.default_rng(7)
    scores[rng.random(scores.shape) < 0.15] = np.nan
    holey = VoteTable(table.stimulus_ids, table.observer_ids, scores, table.content_ids)
    assert 0 < np.isnan(holey.scores).sum() < scores.size // 4
    compare_with_sureal(holey, keyed=True)


def simulated_votes(seed, num_stimuli, num_observers, num_contents):
    """Votes drawn from the model itself with known parameters (10% left missing)."""
    rng = np.random.default_rng(seed)
    quality = rng.uniform(1.0, 5.0, num_stimuli)
    bias = rng.uniform(-0.8, 0.8, num_observers)
    bias -= bias.mean()
    inconsistency = rng.uniform(0.2, 0.9, num_observers)
    content_of = np.arange(num_stimuli) % num_contents
    ambiguity = rng.uniform(0.2, 0.6, num_contents)
    spread = np.sqrt(inconsistency[None, :] ** 2 + ambiguity[content_of][:, None] ** 2)
    scores = quality[:, None] + bias[None, :] + spread * rng.standard_normal(spread.shape)
    scores[rng.random(scores.shape) < 0.1] = np.nan  # some missing votes
    table = VoteTable(tuple(map(str, range(num_stimuli))), tuple(map(str, range(num_observers))),
                      scores, tuple(f"c{c}" for c in content_of))
    return table, quality, bias, inconsistency, ambiguity


def test_mle_recovers_known_parameters_from_simulated_votes():
    table, quality, bias, inconsistency, ambiguity = simulated_votes(2024, 120, 24, 8)
    fit = mle_subject_model(table)
    assert fit.converged and not fit.collapsed
    assert np.max(np.abs(fit.observer_bias - bias)) < 0.2
    assert np.all(np.abs(fit.observer_bias - bias) < 4 * fit.observer_bias_std)
    assert np.max(np.abs(fit.quality - quality)) < 0.6
    # only v_i^2 + a_c^2 is pinned down exactly: check that spread, and v's ranking
    spread = np.sqrt(inconsistency[None, :] ** 2 + ambiguity[:, None] ** 2)
    fitted = np.sqrt(fit.observer_inconsistency[None, :] ** 2
                     + fit.content_ambiguity[:, None] ** 2)
    assert np.max(np.abs(fitted - spread)) < 0.25
    assert np.corrcoef(fit.observer_inconsistency, inconsistency)[0, 1] > 0.9
    # the model's qualities beat the plain MOS, which carries the observers' biases
    assert np.mean((fit.quality - quality) ** 2) < np.mean((fit.mos.mean - quality) ** 2)
    inside = (fit.quality_ci_low <= quality) & (quality <= fit.quality_ci_high)
    assert inside.mean() > 0.85
    assert fit.stimulus_ambiguity.shape == (table.num_stimuli,)
    assert np.max(np.abs(fit.content_ambiguity - ambiguity)) < 0.2


def integer_votes(seed, num_stimuli=8, num_observers=12, num_contents=3, missing=0.0):
    """A small study's ACR votes: the model's votes rounded and clipped to 1..5."""
    rng = np.random.default_rng(seed)
    quality = rng.uniform(1.5, 4.5, num_stimuli)
    bias = rng.normal(0.0, 0.4, num_observers)
    inconsistency = rng.uniform(0.1, 0.8, num_observers)
    content_of = np.arange(num_stimuli) % num_contents
    scores = (quality[:, None] + bias[None, :]
              + inconsistency[None, :] * rng.standard_normal((num_stimuli, num_observers)))
    scores = np.clip(np.rint(scores), 1, 5)
    scores[rng.random(scores.shape) < missing] = np.nan
    return VoteTable(tuple(f"s{j}" for j in range(num_stimuli)),
                     tuple(f"o{i}" for i in range(num_observers)), scores,
                     tuple(f"c{c}" for c in content_of))


def fit_without_warnings(table, **kwargs):
    """mle_subject_model, failing on any warning (overflow, division by zero, ...)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = mle_subject_model(table, **kwargs)
    assert [str(w.message) for w in caught] == []
    return fit


def assert_sane_intervals(fit, low=-10.0, high=10.0):
    """Every bound is NaN (not estimable) or a number on the scale's order, around its value."""
    for value, ci_low, ci_high in (
            (fit.quality, fit.quality_ci_low, fit.quality_ci_high),
            (fit.observer_bias, fit.observer_bias_ci_low, fit.observer_bias_ci_high),
            (fit.observer_inconsistency, fit.observer_inconsistency_ci_low,
             fit.observer_inconsistency_ci_high)):
        assert np.all(np.isfinite(value)) and np.all((low < value) & (value < high))
        for bound in (ci_low, ci_high):
            known = ~np.isnan(bound)
            assert np.all((low < bound[known]) & (bound[known] < high))
        known = ~np.isnan(ci_low) & ~np.isnan(ci_high)
        assert np.all(ci_low[known] <= value[known]) and np.all(value[known] <= ci_high[known])


@pytest.mark.parametrize("seed", range(6))
def test_mle_small_integer_study_with_floor_is_bounded(seed):
    # 12 observers x 8 stimuli of rounded votes: some observers' residuals are far below the
    # 0.1 floor, where the likelihood is convex in v and a Newton step used to run away
    table = integer_votes(seed)
    for oblivious in (False, True):
        fit = fit_without_warnings(table, min_inconsistency=0.1, content_oblivious=oblivious)
        assert fit.converged and not fit.collapsed
        assert np.all(fit.observer_inconsistency >= 0.1)
        assert np.all(fit.observer_inconsistency <= 4.0)  # no more than the vote range
        assert np.all(np.isfinite(fit.quality_std)) and np.all(np.isfinite(fit.observer_bias_std))
        assert np.all(fit.observer_bias_std < 1.0) and np.all(fit.quality_std < 1.0)
        assert_sane_intervals(fit)
        on_floor = fit.observer_inconsistency <= 0.1 * (1 + 1e-9)
        # a floor-bound v has no curvature-based std, and its lower bound is the floor
        assert np.all(np.isnan(fit.observer_inconsistency_std[on_floor]))
        np.testing.assert_allclose(fit.observer_inconsistency_ci_low[on_floor], 0.1)
        assert np.all(np.isfinite(fit.observer_inconsistency_ci_high))
        # the fit recovers the plain MOS's ranking of stimuli (votes are not degenerate)
        assert np.corrcoef(fit.quality, fit.mos.mean)[0, 1] > 0.9
    with pytest.raises(ConfigError, match="min_inconsistency -0.1 must be a number >= 0"):
        mle_subject_model(table, min_inconsistency=-0.1)


@pytest.mark.parametrize("seed", [9, 11, 13, 16, 20])
def test_mle_sparse_integer_studies_converge(seed):
    # 30% of the votes missing: the unconstrained fit used to stop with "diverged" here
    table = integer_votes(seed, missing=0.3)
    assert np.isnan(table.scores).any()
    for oblivious in (False, True):
        free = fit_without_warnings(table, content_oblivious=oblivious)
        assert free.converged and np.all(np.isfinite(free.quality))
        assert_sane_intervals(free)
        if free.collapsed:  # the collapsed votes' stimuli and observers get no intervals
            spread = np.sqrt(free.observer_inconsistency[None, :] ** 2
                             + (0.0 if oblivious else free.stimulus_ambiguity[:, None] ** 2))
            collapsed_votes = ~np.isnan(table.scores) & (spread < 1e-3)
            assert np.all(np.isnan(free.quality_std[collapsed_votes.any(axis=1)]))
            assert np.all(np.isnan(free.observer_bias_ci_low[collapsed_votes.any(axis=0)]))
        floored = fit_without_warnings(table, content_oblivious=oblivious, min_inconsistency=0.1)
        assert floored.converged and not floored.collapsed
        assert np.all(floored.observer_inconsistency >= 0.1)
        assert np.all(np.isfinite(floored.quality_ci_low))
        assert_sane_intervals(floored)


def test_mle_cli_small_study_shows_bounded_intervals_and_na(tmp_path):
    from typer.testing import CliRunner

    from gameqa.subjective.cli import study_app

    def write_votes(table, path):
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["stimulus", "observer", "score", "content"])
            for j, stimulus in enumerate(table.stimulus_ids):
                for i, observer in enumerate(table.observer_ids):
                    if not np.isnan(table.scores[j, i]):
                        writer.writerow([stimulus, observer, int(table.scores[j, i]),
                                         table.content_ids[j]])
        return path

    runner = CliRunner()
    dense = write_votes(integer_votes(1), tmp_path / "dense.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = runner.invoke(study_app, ["analyze", str(dense), "--model", "mle",
                                           "--min-inconsistency", "0.1", "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["converged"] and not data["collapsed"]
    for observer in data["observers"]:
        assert observer["inconsistency"] >= 0.1 - 1e-12
        low, high = observer["bias_ci"]
        assert -5 < low <= observer["bias"] <= high < 5
        assert observer["inconsistency_ci"][1] < 5
    sparse = write_votes(integer_votes(9, missing=0.3), tmp_path / "sparse.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = runner.invoke(study_app, ["analyze", str(sparse), "--model", "mle"])
    assert result.exit_code == 0, result.output
    assert "n/a" in result.stdout and "e+" not in result.stdout
    assert "Try --min-inconsistency 0.1" in result.output
    result = runner.invoke(study_app, ["analyze", str(sparse), "--model", "mle", "--output",
                                       "json"])
    stimuli = json.loads(result.stdout)["stimuli"]
    assert any(s["quality_std"] is None for s in stimuli)  # not estimable: null, not ~0


# --- manifest and printing ------------------------------------------------------------

def test_manifest_and_rich_table(tmp_path):
    nan = np.nan
    scores = np.array([[1, 2, 3, 2], [4, 5, 4, nan], [3, 3, 4, 2], [5, nan, nan, nan]], float)
    table = VoteTable(("w", "x", "y", "z"), ("o1", "o2", "o3", "o4"), scores,
                      ("c1", "c1", "c2", "c2"))
    written = write_manifest(mos(table), tmp_path / "out" / "mos.csv")
    rows = list(csv.DictReader(written.read_text().splitlines()))
    assert [r["stimulus"] for r in rows] == ["w", "x", "y", "z"]
    assert float(rows[0]["mean"]) == pytest.approx(2.0) and rows[1]["n"] == "3"
    assert rows[3]["std"] == "" and rows[3]["ci_low"] == ""  # one vote: no spread
    assert "quality" not in rows[0]

    small_study = simulated_votes(5, 30, 8, 3)[0]
    # 8 observers, 3 contents: the unbounded fit collapses onto one observer's votes
    assert mle_subject_model(small_study).collapsed
    fit = mle_subject_model(small_study, min_inconsistency=0.2)
    assert not fit.collapsed and np.all(fit.observer_inconsistency >= 0.2)
    rows = list(csv.DictReader(write_manifest(fit, tmp_path / "mle.csv").read_text().splitlines()))
    assert len(rows) == 30
    assert {"quality", "quality_ci_low", "quality_ci_high", "ambiguity"} <= set(rows[0])
    for row, quality in zip(rows, fit.quality):
        assert float(row["quality"]) == pytest.approx(quality, rel=1e-5)
        assert float(row["quality_ci_low"]) < float(row["quality"]) < float(row["quality_ci_high"])

    from rich.console import Console
    console = Console(record=True, width=160)
    print_mos_table(bt500_screen(table), console=console, title="votes")
    text = console.export_text()
    assert "ci_high" in text and "z" in text and "rejected observers: none" in text
