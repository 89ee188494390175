"""The demo page in real headless Chromium (Debian's ``chromium``, driven by Playwright with
``executable_path``): drop a clip and see the score, the per-frame plot with the worst moments
marked and their frames; drop a screenshot and see its score; drop a text file and see a clear error.
Set GAMEQA_SERVE_SCREENSHOTS=<folder> to keep screenshots of the page."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webtest import ThreadServer, need_browser, open_chromium, screenshot  # noqa: E402

sync_api = need_browser()
httpx = pytest.importorskip("httpx")

from gameqa.serve.app import ServeConfig, create_app  # noqa: E402

import clipgen  # noqa: E402

KEY = "browser-test-key-1234"
SCREENSHOTS = os.environ.get("GAMEQA_SERVE_SCREENSHOTS")


@pytest.fixture()
def server(tmp_path):
    app = create_app(ServeConfig(data_dir=tmp_path / "data", api_keys={KEY: "browser"}))
    with ThreadServer(app) as running:
        yield running.url


@pytest.fixture()
def inputs(tmp_path, need_ffmpeg) -> dict[str, Path]:
    clip = clipgen.make_clip(tmp_path / "gameplay.mp4", size=(320, 180), fps=10, seconds=2.0, source="mandelbrot")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:180, 0:320]
    img = (127 + 90 * np.sin(xx * 0.08) * np.cos(yy * 0.05))[..., None].repeat(3, 2) + rng.normal(0, 8, (180, 320, 3))
    shot = tmp_path / "screenshot.png"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(shot)
    text = tmp_path / "readme.mp4"
    text.write_text("not a video\n" * 50)
    return {"clip": clip, "shot": shot, "text": text}


def snap(page, name: str) -> None:
    screenshot(page, SCREENSHOTS, name)


def test_demo_page_scores_a_clip_an_image_and_refuses_text(server, inputs, tmp_path):
    with sync_api.sync_playwright() as playwright:
        context, page = open_chromium(playwright, tmp_path / "chromium-profile", 1100, 900)
        try:
            page.set_default_timeout(20_000)
            console_errors, outside = [], []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((server, "blob:" + server)) else None)

            page.goto(server + "/")
            page.wait_for_selector("#status-text.error")  # models need the key: the page asks for it
            assert "needs an API key" in page.text_content("#status-text")
            page.fill("#apikey", KEY)
            page.dispatch_event("#apikey", "change")
            page.wait_for_selector("#model option[value=niqe]", state="attached")
            page.select_option("#model", "niqe")  # other tests may have registered more models

            # a clip: overall score, plot with worst moments, their frames
            page.set_input_files("#file", str(inputs["clip"]))
            page.wait_for_selector("#video-part:not(.hidden)")
            jobs = httpx.get(server + "/v1/jobs", headers={"X-API-Key": KEY}).json()
            job = jobs[0]
            assert job["status"] == "done" and job["filename"] == "gameplay.mp4"
            result = job["result"]
            shown = float(page.text_content("#overall"))
            assert shown == pytest.approx(result["overall"], abs=0.01)
            points = page.get_attribute("#plot polyline", "points").split()
            assert len(points) == len(result["frame_scores"]) == 4
            assert page.locator("#plot circle.worst-mark").count() == 3
            page.wait_for_function(
                "() => [...document.querySelectorAll('#worst img')].filter(i => i.complete && i.naturalWidth > 0).length === 3")
            captions = page.locator("#worst figcaption").all_text_contents()
            worst = job["worst_frames"]
            assert captions[0].startswith("#1") and f"frame {worst[0]['frame_index']}" in captions[0]
            assert "lower is better" in page.text_content("#model-meta")
            assert page.is_hidden("#image-part")
            snap(page, "1-clip-result")

            # a screenshot: the score shown clearly, the image itself, no plot
            page.set_input_files("#file", str(inputs["shot"]))
            page.wait_for_selector("#image-part:not(.hidden)")
            page.wait_for_function("() => document.querySelector('#image-thumb').naturalWidth === 320")
            image_job = httpx.get(server + "/v1/jobs", headers={"X-API-Key": KEY}).json()[0]
            assert image_job["result"]["kind"] == "image"
            assert float(page.text_content("#image-score")) == pytest.approx(image_job["result"]["overall"], abs=0.01)
            assert page.is_hidden("#video-part") and page.is_hidden("#aesthetic")  # no aesthetic model yet
            snap(page, "2-image-result")
            # an image result that carries an aesthetic mean and spread shows them (no such model yet:
            # the result is the real one with the two fields added)
            page.evaluate("job => showResult(job)", {**image_job, "result": {
                **image_job["result"], "aesthetic_mean": 6.2, "aesthetic_std": 1.4}})
            page.wait_for_selector("#aesthetic:not(.hidden)")
            assert page.text_content("#aesthetic-value") == "6.20 ± 1.40"

            # not media: a clear message, no result
            page.set_input_files("#file", str(inputs["text"]))
            page.wait_for_selector("#status-text.error")
            assert "not a video or image file" in page.text_content("#status-text")
            assert page.is_hidden("#result")
            snap(page, "3-error")

            assert outside == []  # no CDN, nothing fetched from elsewhere
            # the model list before the key (401) and the refused upload (415) log console errors;
            # nothing else may (a CSP violation would)
            assert [e for e in console_errors if "401" not in e and "415" not in e] == [], console_errors
        finally:
            context.close()
