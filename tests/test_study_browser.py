"""A participant walks through the study in real headless Chromium (Debian's ``chromium``,
driven by Playwright with ``executable_path``): consent and viewing conditions, a training
clip, a page reload, three rated clips that play to their end before the rating shows, and
the end page; the votes are then checked through the experimenter export."""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import pytest

from webtest import ThreadServer, need_browser, open_chromium, screenshot  # noqa: E402

sync_api = need_browser()
httpx = pytest.importorskip("httpx")

from gameqa.subjective.app import create_app  # noqa: E402
from gameqa.subjective.study import load_study  # noqa: E402

import clipgen  # noqa: E402

TOKEN = "browser-test-experimenter-token"
SCREENSHOTS = os.environ.get("GAMEQA_STUDY_SCREENSHOTS")  # a folder to save page screenshots in


@pytest.fixture()
def video_study(tmp_path, need_ffmpeg) -> Path:
    """Three VP9 clips of two contents and one training clip, 0.6 s each; one session rates
    all three."""
    folder = tmp_path / "study" / "stimuli"
    folder.mkdir(parents=True)
    clips = {"a_good": ("testsrc2", 30), "a_bad": ("testsrc2", 63), "b_good": ("mandelbrot", 30),
             "train": ("mandelbrot", 50)}
    for name, (source, crf) in clips.items():
        clipgen.make_clip(folder / f"{name}.webm", codec="libvpx-vp9", size=(320, 180), fps=10,
                          seconds=0.6, source=source, extra=["-b:v", "0", "-crf", str(crf)])
    study = tmp_path / "study" / "study.toml"
    study.write_text(f"""
[study]
name = "browser"
title = "Browser test study"
method = "acr5"
stimulus_dir = "stimuli"
session_items = 3
experimenter_token = "{TOKEN}"

[[stimuli]]
id = "a_good"
file = "a_good.webm"
content = "a"

[[stimuli]]
id = "a_bad"
file = "a_bad.webm"
content = "a"

[[stimuli]]
id = "b_good"
file = "b_good.webm"
content = "b"

[[training]]
id = "train"
file = "train.webm"

[[questions]]
id = "display"
text = "What screen are you watching on?"
choices = ["laptop", "desktop monitor", "TV"]
""")
    return study


@pytest.fixture()
def server(video_study, tmp_path):
    app = create_app(load_study(video_study), f"sqlite:///{tmp_path / 'votes.sqlite'}")
    with ThreadServer(app) as running:
        yield running.url


def shot(page, name: str) -> None:
    screenshot(page, SCREENSHOTS, name)


def test_participant_walks_through_the_study_in_chromium(server, tmp_path):
    with sync_api.sync_playwright() as playwright:
        context, page = open_chromium(playwright, tmp_path / "chromium-profile", 1000, 760)
        try:
            page.set_default_timeout(10_000)
            console_errors = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            outside, failed = [], []
            page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server) else None)

            page.goto(server + "/join")
            shot(page, "1-join")
            page.click("#start")
            page.wait_for_url("**/p/*")
            participant_url = page.url
            page.wait_for_selector("#consent:not(.hidden)")
            shot(page, "2-consent")
            # starting without agreeing is refused on the page
            page.select_option("#q-display", "laptop")
            page.click("#consent-submit")
            assert "agree" in page.text_content("#error")
            page.check("#agree")
            page.click("#consent-submit")

            page.wait_for_selector("#ready:not(.hidden)")
            assert page.text_content("#phase") == "Practice"
            shot(page, "3-training-ready")
            rate(page, 2, "4-training-vote")

            # a reload resumes at the first rated item
            page.reload()
            page.wait_for_selector("#ready:not(.hidden)")
            assert page.text_content("#counter") == "Item 1 of 3"
            for number, score in ((1, 5), (2, 1), (3, 4)):
                assert page.text_content("#counter") == f"Item {number} of 3"
                rate(page, score, f"5-item{number}-vote")
            page.wait_for_selector("#done:not(.hidden)")
            shot(page, "6-done")
            assert "Thank you" in page.text_content("#done")

            # the used link now only shows the end page
            page.goto(participant_url)
            page.wait_for_selector("#done:not(.hidden)")

            page.goto(server + "/admin")
            page.fill("#token", TOKEN)
            page.click("#login button")
            page.wait_for_selector("#report:not(.hidden)")
            assert "1 of 1 participants finished" in page.text_content("#summary")
            shot(page, "7-admin")
            assert failed == [] and console_errors == [] and outside == []
        finally:
            context.close()

    export = httpx.get(server + "/api/admin/votes.csv", params={"all": "true"},
                       headers={"Authorization": f"Bearer {TOKEN}"}).text
    rows = list(csv.DictReader(io.StringIO(export)))
    assert [(r["phase"], r["score"]) for r in rows] == [("training", "2"), ("main", "5"),
                                                        ("main", "1"), ("main", "4")]
    assert rows[0]["stimulus"] == "train"
    main = [r["stimulus"] for r in rows[1:]]
    assert sorted(main) == ["a_bad", "a_good", "b_good"]
    assert main[1] == "b_good"  # the two clips of content "a" are never shown back to back


def rate(page, score: int, name: str) -> None:
    """Press Play, check the rating only shows after the clip ended, rate, submit."""
    started = time.monotonic()
    page.click("#play")
    page.wait_for_selector("#stage video", state="attached")
    assert page.is_hidden("#vote")
    page.wait_for_selector("#vote:not(.hidden)")
    assert time.monotonic() - started >= 0.5  # the 0.6 s clip played to its end first
    assert page.query_selector("#stage video") is None
    assert page.is_disabled("#vote-submit")
    page.click(f"#scale button[data-score='{score}']")
    shot(page, name)
    page.click("#vote-submit")
    page.wait_for_selector("#vote.hidden", state="attached")
