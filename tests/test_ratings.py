"""Rating readers on generated files: AVA histograms, per-rater tables, MOS tables, study votes, CLIVE .mat."""
import numpy as np
import pytest
from scipy.io import savemat

from gameqa.data.ratings import (RatingSet, read_ava, read_clive, read_mos_table, read_rater_table, read_ratings,
                                 read_votes_export, simulate_panel, smaller_panel, summarise_histogram)
from gameqa.errors import ConfigError


def test_ava_txt_and_short_rows(tmp_path):
    # image 953619: 2 votes of 2, 1 of 5, 1 of 10 -> mean 19/4 = 4.75, sample std sqrt((2*2.75^2 + .25^2 + 5.25^2)/3)
    path = tmp_path / "AVA.txt"
    path.write_text("1 953619 0 2 0 0 1 0 0 0 0 1 1 22 1396\n"
                    "2 953958 0 0 0 0 10 0 0 0 0 0 0 0 1396\n"
                    "photo7.png 0 0 0 0 0 0 3 3 0 0\n")
    r = read_ava(path, root="imgs")
    assert r.ids == ("953619.jpg", "953958.jpg", "photo7.png")
    assert r.mean.tolist() == pytest.approx([4.75, 5.0, 7.5])
    assert r.std[0] == pytest.approx(np.sqrt((2 * 2.75 ** 2 + 0.25 ** 2 + 5.25 ** 2) / 3))
    assert r.std[1] == 0.0 and r.n.tolist() == [4, 10, 6]
    assert r.histogram.shape == (3, 10) and r.bins == tuple(float(b) for b in range(1, 11))
    assert r.scale == (1.0, 10.0) and r.root == tmp_path / "imgs"
    assert r.probabilities()[2, 6] == pytest.approx(0.5)
    assert r.image_path(2) == tmp_path / "imgs" / "photo7.png"


@pytest.mark.parametrize("text, problem", [
    ("1 2 3\n", "expected 15"),
    ("a 0 0 0 0 x 0 0 0 0 0\n", "not a number"),
    ("a 0 0 0 0 1.5 0 0 0 0 0\n", "whole numbers"),
    ("a 0 0 0 0 1 0 0 0 0 0\n", "fewer than 2"),
    ("\n", "no images"),
])
def test_ava_errors(tmp_path, text, problem):
    path = tmp_path / "AVA.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as info:
        read_ava(path)
    assert str(info.value).startswith(str(path))


def test_rater_table(tmp_path):
    path = tmp_path / "raters.csv"
    path.write_text("image,r1,r2,r3\na.png,1,2,3\nb.png,5,,4\n")
    r = read_rater_table(path, scale=(1, 5))
    assert r.mean.tolist() == pytest.approx([2.0, 4.5])
    assert r.std.tolist() == pytest.approx([1.0, np.sqrt(0.5)])
    assert r.n.tolist() == [3, 2]
    assert r.histogram.tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 1, 1]]
    with pytest.raises(ConfigError, match="outside the scale"):
        read_rater_table(path, scale=(1, 4))
    path.write_text("image,r1,r2\na.png,1,\n")
    with pytest.raises(ConfigError, match="fewer than 2"):
        read_rater_table(path, scale=(1, 5))


def test_rater_table_fractional_scores_have_no_histogram(tmp_path):
    path = tmp_path / "raters.csv"
    path.write_text("image,r1,r2\na.png,10.5,20\n")
    r = read_rater_table(path, scale=(0, 100))
    assert r.histogram is None and r.mean[0] == pytest.approx(15.25)


def test_mos_table(tmp_path):
    path = tmp_path / "mos.csv"
    path.write_text("image,mos,std,n\na.jpg,55.5,12.0,30\nb.jpg,20,9,\n")
    with pytest.raises(ConfigError, match="line 3: n must be"):
        read_mos_table(path, scale=(0, 100))
    r = read_mos_table(path, scale=(0, 100), raters=40)
    assert r.n.tolist() == [30, 40] and r.mean.tolist() == [55.5, 20.0]
    # half-width of a 95% interval: t(29) * 12 / sqrt(30) = 2.0452 * 2.1909
    assert r.half_width()[0] == pytest.approx(2.04523 * 12 / np.sqrt(30), abs=1e-4)
    (tmp_path / "bad.csv").write_text("image,mean\na,1\n")
    with pytest.raises(ConfigError, match="missing column"):
        read_mos_table(tmp_path / "bad.csv", scale=(0, 100), raters=10)
    path.write_text("image,mean,std\na.jpg,5,1\n")
    with pytest.raises(ConfigError, match="number of raters"):
        read_mos_table(path, scale=(1, 10))


def test_votes_export_matches_study_analysis(tmp_path):
    path = tmp_path / "votes.csv"
    path.write_text("stimulus,observer,score,content\n"
                    "s1,o1,4,c1\ns1,o2,5,c1\ns1,o3,3,c1\n"
                    "s2,o1,1,c2\ns2,o2,2,c2\ns2,o3,,c2\n")
    r = read_votes_export(path, scale=(1, 5))
    assert r.ids == ("s1", "s2")
    assert r.mean.tolist() == pytest.approx([4.0, 1.5])
    assert r.std.tolist() == pytest.approx([1.0, np.sqrt(0.5)])
    assert r.n.tolist() == [3, 2]
    assert r.histogram.tolist() == [[0, 0, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert r.info["content"] == ("c1", "c2")
    same = read_ratings("votes", path, scale=(1, 5))
    assert same.mean.tolist() == r.mean.tolist()


def test_clive_release_layout(tmp_path):
    names = np.empty((4, 1), dtype=object)
    for k, name in enumerate(["t1.bmp", "t2.bmp", "10.bmp", "1000.JPG"]):
        names[k, 0] = np.array([name])
    data = tmp_path / "Data"
    data.mkdir()
    savemat(data / "AllImages_release.mat", {"AllImages_release": names})
    savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.array([[60.0, 30.0, 45.5, 70.25]])})
    savemat(data / "AllStdDev_release.mat", {"AllStdDev_release": np.array([[18.0, 12.0, 19.5, 15.0]])})
    r = read_clive(tmp_path)
    assert r.ids == ("10.bmp", "1000.JPG") and r.mean.tolist() == [45.5, 70.25] and r.std.tolist() == [19.5, 15.0]
    assert r.n.tolist() == [175, 175] and r.scale == (0.0, 100.0) and r.root == tmp_path / "Images"
    everything = read_clive(tmp_path, include_training=True)
    assert everything.ids[0] == "trainingImages/t1.bmp" and len(everything) == 4
    with pytest.raises(ConfigError, match="not a CLIVE"):
        read_clive(tmp_path / "nowhere")


def test_rating_set_checks_and_subset():
    with pytest.raises(ConfigError, match="at least 2 raters"):
        RatingSet("x", ("a",), [1.0], [0.5], [1], (0, 10))
    with pytest.raises(ConfigError, match="not unique"):
        RatingSet("x", ("a", "a"), [1.0, 2.0], [0.5, 0.5], [3, 3], (0, 10))
    r = RatingSet("x", ("a", "b", "c"), [1.0, 2.0, 3.0], [0.5, 0.6, 0.7], [3, 4, 5], (0, 10))
    sub = r.subset(np.array([2, 0]))
    assert sub.ids == ("c", "a") and sub.n.tolist() == [5, 3]


def test_simulated_panel_has_the_asked_mean_and_spread():
    rng = np.random.default_rng(1)
    true_mean = np.array([3.5, 5.5, 5.5])
    true_spread = np.array([0.9, 1.5, 1.8])
    counts = simulate_panel(true_mean, true_spread, np.array([4000, 4000, 4000]), rng)
    mean, std, n = summarise_histogram(counts, range(1, 11))
    assert n.tolist() == [4000, 4000, 4000]
    assert mean == pytest.approx(true_mean, abs=0.08)
    # rounding to whole votes adds 1/12 to the variance; clipping at 1 and 10 removes a little
    assert std == pytest.approx(np.sqrt(true_spread ** 2 + 1 / 12), abs=0.1)
    small = simulate_panel(true_mean, true_spread, np.array([80, 80, 80]), rng)
    assert small.sum(axis=1).tolist() == [80, 80, 80]


def test_smaller_panel_has_the_noise_of_few_raters():
    # 3000 images of mean 50 and std 20 on 0-100, re-rated by 16 raters each: the means scatter by 20 / sqrt(16) = 5
    full = RatingSet("full", [f"i{k}" for k in range(3000)], np.full(3000, 50.0), np.full(3000, 20.0),
                     np.full(3000, 175), (0.0, 100.0))
    small = smaller_panel(full, 16, np.random.default_rng(0))
    assert small.ids == full.ids and small.n.tolist() == [16] * 3000 and small.histogram is None
    assert np.std(small.mean - 50.0) == pytest.approx(5.0, rel=0.05)
    assert np.mean(small.std) == pytest.approx(20.0, rel=0.03)
    assert np.mean(small.half_width()) > 3 * np.mean(full.half_width())   # the intervals of a small study are wide
    # the drawn scores are clipped to the scale, so means and spreads stay inside it
    edge = smaller_panel(RatingSet("edge", ["a", "b"], [99.0, 1.0], [30.0, 30.0], [175, 175], (0.0, 100.0)), 8,
                         np.random.default_rng(1))
    assert 0.0 < edge.mean[1] < edge.mean[0] < 100.0 and np.all(edge.std <= 50.0 * np.sqrt(8 / 7))
    again = smaller_panel(full, 16, np.random.default_rng(0))
    assert np.array_equal(again.mean, small.mean)
    with pytest.raises(ConfigError, match="at least 2 raters"):
        smaller_panel(full, 1, np.random.default_rng(0))
