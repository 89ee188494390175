"""gameqa.evaluate: correlation metrics vs scipy, logistic mapping, bootstrap, score files, MOS scales."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import stats

from gameqa.errors import GameQAError
from gameqa.evaluate import (
    bootstrap_ci, correlation_table, evaluate_files, fit_logistic, krocc, logistic4, plcc, print_table,
    read_records, rescale, rmse, srocc, to_mos5,
)
from gameqa.evaluate.table import PERF_METRICS


def _random_pairs(seed: int, ties: bool):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    pred = rng.normal(size=n)
    labels = 0.6 * pred + rng.normal(scale=0.8, size=n)
    if ties:  # coarse values give many tied ranks on both sides, like MOS on a 1-5 grid
        pred = np.round(pred * 2) / 2
        labels = np.clip(np.round(labels + 3), 1, 5)
    return pred, labels


def _kendall_tau_b_bruteforce(x, y) -> float:
    concordant_minus_discordant = 0.0
    untied_x = untied_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        concordant_minus_discordant += sx * sy
        untied_x += sx != 0
        untied_y += sy != 0
    return concordant_minus_discordant / np.sqrt(untied_x * untied_y)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("ties", [False, True])
def test_metrics_match_scipy(seed, ties):
    pred, labels = _random_pairs(seed, ties)
    assert srocc(pred, labels) == pytest.approx(stats.spearmanr(pred, labels).statistic, abs=1e-9)
    assert krocc(pred, labels) == pytest.approx(stats.kendalltau(pred, labels).statistic, abs=1e-9)
    assert plcc(pred, labels) == pytest.approx(stats.pearsonr(pred, labels).statistic, abs=1e-9)
    assert rmse(pred, labels) == pytest.approx(np.sqrt(np.mean((pred - labels) ** 2)), abs=1e-12)
    # The bootstrap's vectorised forms give the same values as the scalar ones.
    for metric in PERF_METRICS.values():
        assert metric.rows_func(pred[None], labels[None])[0] == pytest.approx(metric(pred, labels), abs=1e-12)


def test_krocc_matches_bruteforce_tau_b_with_ties():
    pred, labels = _random_pairs(7, ties=True)
    pred, labels = pred[:60], labels[:60]
    assert krocc(pred, labels) == pytest.approx(_kendall_tau_b_bruteforce(pred, labels), abs=1e-12)


def test_correlations_on_known_cases():
    x = np.arange(10.0)
    assert srocc(x, x ** 3) == pytest.approx(1.0)
    assert krocc(x, -np.exp(x)) == pytest.approx(-1.0)
    assert plcc(x, 2 * x + 1) == pytest.approx(1.0)
    assert rmse(x, x + 0.5) == pytest.approx(0.5)


def test_constant_input_gives_nan_and_bad_input_raises():
    assert np.isnan(srocc(np.ones(8), np.arange(8.0)))
    assert np.isnan(krocc(np.arange(8.0), np.full(8, 3.0)))
    assert np.isnan(plcc(np.full(8, 0.1), np.arange(8.0)))
    with pytest.raises(GameQAError, match="differ in length"):
        plcc([1, 2, 3], [1, 2])
    with pytest.raises(GameQAError, match="NaN"):
        srocc([1, 2, np.nan], [1, 2, 3])
    with pytest.raises(GameQAError, match="at least 2"):
        rmse([1], [1])


def test_logistic_fit_recovers_known_parameters():
    rng = np.random.default_rng(11)
    true = (4.6, 1.3, 55.0, 9.0)  # MOS 1.3..4.6 against a 0-100 model score
    x = rng.uniform(0, 100, size=400)
    y = logistic4(x, *true) + rng.normal(scale=0.05, size=x.size)
    fit = fit_logistic(x, y)
    assert fit.params == pytest.approx(true, rel=0.03)


def test_logistic_fit_handles_falling_relation_and_improves_plcc():
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 20, size=300)  # e.g. NIQE: lower is better
    y = 1 + 4 / (1 + np.exp((x - 8) / 1.5)) + rng.normal(scale=0.1, size=x.size)
    fit = fit_logistic(x, y)
    mapped = fit(x)
    assert fit.b1 < fit.b2  # falling curve
    assert plcc(mapped, y) > abs(plcc(x, y)) + 0.02
    assert plcc(mapped, y) > 0.98
    assert rmse(mapped, y) < 0.15
    assert srocc(mapped, y) == pytest.approx(-srocc(x, y), abs=1e-12)  # monotonic mapping keeps ranks


def test_logistic_fit_rejects_degenerate_input():
    with pytest.raises(GameQAError, match="all predictions are equal"):
        fit_logistic(np.full(10, 2.0), np.arange(10.0))
    with pytest.raises(GameQAError, match="all labels are equal"):
        fit_logistic(np.arange(10.0), np.full(10, 2.0))
    with pytest.raises(GameQAError, match="at least 5"):
        fit_logistic([1, 2, 3], [1, 2, 3])


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    pred, labels = _random_pairs(3, ties=False)
    for metric in PERF_METRICS.values():
        low, high = bootstrap_ci(metric, pred, labels, n_boot=300, seed=42)
        assert low < metric(pred, labels) < high
        assert (low, high) == bootstrap_ci(metric, pred, labels, n_boot=300, seed=42)
    srocc_metric = PERF_METRICS["SROCC"]
    assert bootstrap_ci(srocc_metric, pred, labels, n_boot=300, seed=1) != bootstrap_ci(srocc_metric, pred, labels, n_boot=300, seed=2)
    # More items give a narrower interval.
    rng = np.random.default_rng(0)
    big_pred = rng.normal(size=2000)
    big_labels = big_pred + rng.normal(size=2000)
    low_small, high_small = bootstrap_ci(srocc_metric, big_pred[:50], big_labels[:50], n_boot=300)
    low_big, high_big = bootstrap_ci(srocc_metric, big_pred, big_labels, n_boot=300)
    assert high_big - low_big < (high_small - low_small) / 3


def test_correlation_table_layout_and_print(capsys):
    rng = np.random.default_rng(8)
    pred = rng.uniform(0, 100, size=120)
    labels = 1 + 4 / (1 + np.exp(-(pred - 50) / 10)) + rng.normal(scale=0.2, size=pred.size)
    rows = correlation_table(pred, labels, bootstrap=200, seed=0)
    assert [(r["metric"], r["mapped"]) for r in rows] == [
        (m, mapped) for mapped in (False, True) for m in ("SROCC", "KROCC", "PLCC", "RMSE")]
    by_key = {(r["metric"], r["mapped"]): r for r in rows}
    for name in ("SROCC", "KROCC"):
        assert by_key[(name, True)]["value"] == pytest.approx(by_key[(name, False)]["value"], abs=1e-12)
    assert by_key[("PLCC", True)]["value"] > by_key[("PLCC", False)]["value"]
    assert by_key[("RMSE", True)]["value"] < 0.3
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in rows)
    assert rows == correlation_table(pred, labels, bootstrap=200, seed=0)
    print_table(rows, title="demo")
    out = capsys.readouterr().out
    assert "SROCC" in out and "logistic-mapped" in out and f"{by_key[('PLCC', True)]['value']:.4f}" in out

    raw_only = correlation_table(pred, labels, logistic=False, bootstrap=0)
    assert len(raw_only) == 4 and all(np.isnan(r["ci_low"]) for r in raw_only)
    constant = correlation_table(np.full(10, 3.0), np.arange(10.0), bootstrap=50)
    assert all(np.isnan(r["value"]) for r in constant if r["mapped"])


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_evaluate_files_joins_jsonl_results_to_csv_labels(tmp_path):
    rng = np.random.default_rng(2)
    names = [f"clip_{i:03d}.mp4" for i in range(40)]
    mos = rng.uniform(1, 5, size=len(names))
    pred = 20 * mos + rng.normal(scale=8, size=len(names))
    results = tmp_path / "scores.jsonl"
    # Scores were computed on absolute paths; labels name clips by file name; one extra clip each side.
    _write_jsonl(results, [{"path": f"/data/run1/{n}", "overall": float(p), "model": "x"} for n, p in zip(names, pred)]
                 + [{"path": "/data/run1/unlabelled.mp4", "overall": 50.0}])
    labels = tmp_path / "mos.csv"
    labels.write_text("clip,mos\n" + "".join(f"{n},{m:.6f}\n" for n, m in zip(names, mos)) + "orphan.mp4,3.0\n")
    result = evaluate_files(results, labels, label_key="clip", bootstrap=100)
    assert len(result.keys) == 40
    assert result.pred_only == ["/data/run1/unlabelled.mp4"] and result.labels_only == ["orphan.mp4"]
    order = [names.index(k.rsplit("/", 1)[1]) for k in result.keys]
    np.testing.assert_allclose(result.labels, np.round(mos[order], 6))
    np.testing.assert_allclose(result.predictions, pred[order])
    srocc_row = next(r for r in result.table if r["metric"] == "SROCC" and not r["mapped"])
    assert srocc_row["value"] == pytest.approx(stats.spearmanr(result.predictions, result.labels).statistic, abs=1e-9)


def test_evaluate_files_json_and_stem_join_and_explicit_columns(tmp_path):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"results": [{"image": f"shots/img{i}.png", "pred": i * 1.5 + (i % 3)} for i in range(12)]}))
    labels = tmp_path / "labels.csv"
    labels.write_text("name;label\n" + "".join(f"img{i};{i / 2}\n" for i in range(12)))  # no extension, ';'
    result = evaluate_files(preds, labels, key="image", label_key="name", pred_col="pred", label_col="label", bootstrap=0)
    assert len(result.keys) == 12
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({f"img{i}": i for i in range(12)}))
    assert len(evaluate_files(mapping, labels, label_key="name", bootstrap=0).keys) == 12
    assert read_records(mapping)[0] == {"key": "img0", "score": 0}


def test_evaluate_files_errors_are_one_line_and_name_the_file(tmp_path):
    good = tmp_path / "scores.jsonl"
    _write_jsonl(good, [{"path": f"a{i}.mp4", "overall": float(i)} for i in range(6)])
    cases = []
    no_mos = tmp_path / "no_mos.csv"
    no_mos.write_text("path,rating_count\na0.mp4,3\n")
    cases.append((good, no_mos, {}, str(no_mos), "no label column"))
    other = tmp_path / "other.csv"
    other.write_text("path,mos\nb0.mp4,3\nb1.mp4,4\n")
    cases.append((good, other, {}, str(good), "no item matches"))
    with_nan = tmp_path / "nan.csv"
    with_nan.write_text("path,mos\n" + "".join(f"a{i}.mp4,{'' if i == 2 else i}\n" for i in range(6)))
    cases.append((good, with_nan, {}, str(with_nan), "'a2.mp4' is missing or NaN"))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"path": "a0.mp4", "overall": 1}\n{oops\n')
    cases.append((bad_json, with_nan, {}, str(bad_json), "line 2 is not JSON"))
    dup = tmp_path / "dup.csv"
    dup.write_text("path,mos\na0.mp4,1\na0.mp4,2\n")
    cases.append((good, dup, {}, str(dup), "more than once"))
    cases.append((good, other, {"pred_col": "nope"}, str(good), "no prediction column 'nope'"))
    cases.append((tmp_path / "missing.csv", other, {}, str(tmp_path / "missing.csv"), "file not found"))
    text_score = tmp_path / "text.csv"
    text_score.write_text("path,mos\na0.mp4,good\n")
    cases.append((good, text_score, {}, str(text_score), "not a number"))
    for pred_path, label_path, kwargs, path, problem in cases:
        with pytest.raises(GameQAError) as info:
            evaluate_files(pred_path, label_path, bootstrap=0, **kwargs)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"{path}: "), message
        assert problem in message, message


def test_mos_scale_conversions():
    np.testing.assert_allclose(to_mos5([0, 50, 100], "0-100"), [1, 3, 5])
    np.testing.assert_allclose(to_mos5([1, 10], "1-10"), [1, 5])
    np.testing.assert_allclose(to_mos5([0.0, 0.25], (0, 1)), [1, 2])
    np.testing.assert_allclose(rescale([1, 3, 5], "acr5", "0-100"), [0, 50, 100])
    # A DMOS-like source where 0 is best.
    np.testing.assert_allclose(rescale([0, 100], "0-100", "acr5", higher_is_better=False), [5, 1])
    np.testing.assert_allclose(to_mos5([-10, 120], "0-100"), [1, 5])
    np.testing.assert_allclose(to_mos5([-10, 120], "0-100", clip=False), [0.6, 5.8])
    values = np.random.default_rng(0).uniform(1, 5, size=20)
    np.testing.assert_allclose(rescale(rescale(values, "acr5", "1-10"), "1-10", "acr5"), values)
    assert np.isnan(to_mos5([np.nan], "0-1")[0])
    with pytest.raises(GameQAError, match="unknown score scale"):
        to_mos5([1], "0-7")
    with pytest.raises(GameQAError, match="low < high"):
        to_mos5([1], (5, 1))


def test_close_pair_accuracy_by_hand():
    from gameqa.evaluate import close_pair_accuracy

    labels = [1.0, 1.2, 1.3, 3.0]
    pred = [0.5, 0.7, 0.6, 9.0]
    # close pairs (gap <= 0.5, not tied): (0,1) right, (0,2) right, (1,2) wrong -> 2/3; pairs with item 3 are far
    assert close_pair_accuracy(pred, labels, 0.5) == (pytest.approx(2 / 3), 3)
    assert close_pair_accuracy([1, 2, 2, 3], labels, 0.15) == (0.5, 1)  # tied prediction counts half
    acc, n = close_pair_accuracy(pred, [1, 1, 5, 9], 0.5)
    assert n == 0 and np.isnan(acc)


def test_source_metrics_split_order_within_and_between_sources():
    """Hand-made case: each source's encodes ordered right, the three sources' levels reversed."""
    from gameqa.evaluate.runs import source_metrics

    mos = [1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 3.0, 4.0, 5.0]
    pred = [3.1, 3.2, 3.3, 2.1, 2.2, 2.3, 1.1, 1.2, 1.3]  # right order inside, sources upside down
    src = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    got = source_metrics(pred, mos, src)
    assert got["within-source"] == pytest.approx(1.0) and got["between-source"] == pytest.approx(-1.0)
    # one source swaps two encodes: its SROCC is 0.5, the mean (1 + 1 + 0.5) / 3
    pred2 = [3.2, 3.1, 3.3] + pred[3:]
    assert source_metrics(pred2, mos, src)["within-source"] == pytest.approx(2.5 / 3)
    # a source with two clips does not enter the within-source mean; one source has no between-source order
    few = source_metrics([1.0, 2.0, 1.0, 2.0, 3.0], [1.0, 2.0, 1.0, 2.0, 3.0], ["a", "a", "b", "b", "b"])
    assert few["within-source"] == pytest.approx(1.0) and few["between-source"] == pytest.approx(1.0)
    single = source_metrics([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], ["a"] * 3)
    assert single["within-source"] == pytest.approx(0.5) and np.isnan(single["between-source"])


def test_content_table_gives_each_contents_level_offset_and_inside_order():
    """Hand-made case: content b is put 1.0 too low, content a right; ordered by mean MOS."""
    from gameqa.evaluate.runs import content_table

    mos = [4.0, 5.0, 3.0, 2.0, 3.0, 4.0, 1.0, 1.0]
    pred = [4.0, 5.0, 3.0, 1.0, 2.0, 3.0, 2.0, 2.5]  # a: exact; b: 1.0 below, right order; c: two equal labels
    got = content_table(pred, mos, ["a", "a", "a", "b", "b", "b", "c", "c"])
    assert [r["content"] for r in got] == ["c", "b", "a"]  # mean MOS 1.0, 3.0, 4.0
    c, b, a = got
    assert a["offset"] == pytest.approx(0.0) and a["srocc"] == pytest.approx(1.0) and a["clips"] == 3
    assert b["mos"] == pytest.approx(3.0) and b["prediction"] == pytest.approx(2.0)
    assert b["offset"] == pytest.approx(-1.0) and b["srocc"] == pytest.approx(1.0)
    assert c["offset"] == pytest.approx(1.25) and np.isnan(c["srocc"])  # two clips, one label: no order inside


def test_offset_free_srocc_takes_each_contents_level_out():
    """Hand-made case: contents ordered right inside but placed at swapped levels; once their offsets are out
    the order is the labels' order."""
    from gameqa.evaluate import srocc
    from gameqa.evaluate.runs import offset_free_srocc

    mos = [1.0, 2.0, 3.0, 3.5, 4.0, 5.0]
    pred = [4.0, 4.5, 5.0, 1.0, 1.5, 2.5]  # a: 3 too high, b: 2.5 too low; each ordered right inside
    contents = ["a", "a", "a", "b", "b", "b"]
    assert srocc(pred, mos) < 0
    assert offset_free_srocc(pred, mos, contents) == pytest.approx(1.0)
    # inside order wrong in b: the offsets go, b's own disorder stays
    swapped = [4.0, 4.5, 5.0, 1.5, 1.0, 2.5]
    want = srocc([1.5, 2.0, 2.5, 4.0, 3.5, 5.0], mos)  # a shifted by -2.5, b by +2.5
    assert offset_free_srocc(swapped, mos, contents) == pytest.approx(want)
