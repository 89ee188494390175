"""Checks of the study app shared by the SQLite tests (test_study_app.py) and the PostgreSQL
tests (test_study_pg.py): each takes the database URL, so one scenario runs on both."""
from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from gameqa.bench.study_load import ADMIN_TOKEN, StudyServer, make_image_study
from gameqa.errors import ConfigError
from gameqa.subjective import read_votes_csv
from gameqa.subjective.app import create_app
from gameqa.subjective.cli import study_app
from gameqa.subjective.store import StudyStore
from gameqa.subjective.study import load_study
from webtest import ThreadServer  # noqa: F401  (re-exported for the study tests)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture()
def study_file(tmp_path) -> Path:
    """3 contents x 2 qualities of PNG, 1 training image, 4 distinct + 1 repeat per session."""
    return make_image_study(tmp_path / "study", contents=3, levels=2, items=4, repeats=1)


def join_and_consent(client) -> tuple[str, dict]:
    token = client.post("/api/join").json()["token"]
    state = client.post(f"/api/p/{token}/consent",
                        json={"consent": True, "answers": {"display": "laptop"}}).json()
    return token, state


def vote(client, token, item, score):
    return client.post(f"/api/p/{token}/vote",
                       json={"position": item["position"], "nonce": item["nonce"], "score": score})


def all_votes(client) -> list[dict]:
    response = client.get("/api/admin/votes.csv", params={"all": "true"}, headers=ADMIN)
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.text)))


# --- scenarios ------------------------------------------------------------------------

def check_full_session_export_and_analyze(study_file: Path, db_url: str, tmp_path: Path) -> None:
    """4 participants rate a whole session (6 stimuli + 1 repeat + training) over HTTP; the
    export reads back as a votes table, ``analyze`` runs on it and the CLI export matches."""
    app = create_app(load_study(study_file), db_url)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        _full_session(study_file, db_url, tmp_path, client)


def _full_session(study_file, db_url, tmp_path, client):
    assert client.get("/join").status_code == 200
    study = load_study(study_file)
    stimulus_of = {s.path.read_bytes(): s for s in (*study.stimuli, *study.training)}
    shown = Counter()
    for observer in range(4):
        token, state = join_and_consent(client)
        page = client.get(f"/p/{token}")
        assert page.status_code == 200 and "participant.js" in page.text
        assert state["stage"] == "rate" and state["item"]["phase"] == "training"
        assert state["total"] == 8 and state["training_total"] == 1
        positions = []
        while state["stage"] == "rate":
            item = state["item"]
            positions.append(item["position"])
            media = client.get(f"/api/p/{token}/media/{item['position']}")
            assert media.status_code == 200 and media.headers["content-type"] == "image/png"
            stimulus = stimulus_of[media.content]  # the served file is one of the study's
            shown[(observer, stimulus.id)] += 1
            # a reload issues the same nonce for the item on screen
            assert client.get(f"/api/p/{token}/state").json()["item"]["nonce"] == item["nonce"]
            # a fixed pattern per (observer, stimulus): level q0 rates 3-5, q1 rates 1-3
            level = int(stimulus.id[-1]) if stimulus in study.stimuli else 0
            index = (study.stimuli.index(stimulus) if stimulus in study.stimuli else 0)
            score = 4 - 2 * level + (observer * 2 + index) % 3 - 1
            state = vote(client, token, item, score).json()
        assert positions == list(range(8)) and state["stage"] == "done"
        assert sum(shown[(observer, s.id)] for s in study.stimuli) == 7
        assert sorted(n for (o, _), n in shown.items() if o == observer) == [1] * 6 + [2]
    exported = client.get("/api/admin/votes.csv", headers=ADMIN)
    assert exported.status_code == 200
    votes_file = tmp_path / "votes.csv"
    votes_file.write_text(exported.text)
    table = read_votes_csv(votes_file, scale=(1, 5))
    assert table.num_observers == 4 and table.num_votes == 24
    everything = all_votes(client)
    assert len(everything) == 32 and sum(r["phase"] == "training" for r in everything) == 4
    assert sum(r["repeat"] == "1" for r in everything) == 4
    progress = client.get("/api/admin/progress", headers=ADMIN).json()
    assert progress["participants_done"] == 4 and progress["votes_total"] == 24
    assert all(p["repeat_pairs"] == 1 for p in progress["participants"])

    runner = CliRunner()
    manifest, plot = tmp_path / "manifest.csv", tmp_path / "mle.png"
    result = runner.invoke(study_app, ["analyze", str(votes_file), "--model", "mle", "--output",
                                       "json", "--manifest", str(manifest), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "mle" and len(data["observers"]) == 4
    assert abs(sum(o["bias"] for o in data["observers"])) < 1e-6
    header = manifest.read_text().splitlines()[0].split(",")
    assert header[:4] == ["stimulus", "mean", "std", "n"]
    assert plot.read_bytes().startswith(b"\x89PNG") and plot.stat().st_size > 5000
    result = runner.invoke(study_app, ["analyze", str(votes_file), "--model", "bt500"])
    assert result.exit_code == 0 and "BT.500 rejected observers" in result.stdout
    result = runner.invoke(study_app, ["analyze", str(votes_file), "--model", "mos", "--output", "json"])
    means = {s["stimulus"]: s["mean"] for s in json.loads(result.stdout)["stimuli"]}
    for stimulus in means:
        column = table.scores[table.stimulus_ids.index(stimulus)]
        assert means[stimulus] == pytest.approx(float(np.nanmean(column)))
    result = runner.invoke(study_app, ["analyze", str(votes_file), "--model", "median"])
    assert result.exit_code == 1 and "not one of mos, bt500, mle" in result.output
    # the CLI export reads the same database and writes the same rows
    out_csv = tmp_path / "export.csv"
    result = runner.invoke(study_app, ["export", str(study_file), "--db", db_url,
                                       "--out", str(out_csv)])
    assert result.exit_code == 0, result.output
    assert sorted(out_csv.read_text().splitlines()) == sorted(exported.text.splitlines())


def check_bad_votes_are_refused(client) -> None:
    """Votes off the scale, forged, stale, replayed, for unknown items or links, or after the
    end are refused, and none of them is stored."""
    token, state = join_and_consent(client)
    item = state["item"]
    for score in (0, 6, 3.5, "3", True, None, [3]):
        reply = vote(client, token, item, score)
        assert reply.status_code == 422 and "whole number from 1 to 5" in reply.json()["error"]
    forged = client.post(f"/api/p/{token}/vote",
                         json={"position": item["position"], "nonce": "x" * 32, "score": 3})
    assert forged.status_code == 403 and "forged" in forged.json()["error"]
    unknown_item = client.post(f"/api/p/{token}/vote",
                               json={"position": 999, "nonce": item["nonce"], "score": 3})
    assert unknown_item.status_code == 404 and unknown_item.json()["error"] == "Unknown item."
    for position in (-1, 2**31, 2**63, 10**30):  # past any integer column: refused, not a server error
        reply = client.post(f"/api/p/{token}/vote",
                            json={"position": position, "nonce": item["nonce"], "score": 3})
        assert reply.status_code == 404 and reply.json()["error"] == "Unknown item.", position
    ahead = client.post(f"/api/p/{token}/vote",
                        json={"position": item["position"] + 1, "nonce": item["nonce"], "score": 3})
    assert ahead.status_code == 403
    unknown_link = client.post("/api/p/" + "A" * 32 + "/vote",
                               json={"position": 0, "nonce": item["nonce"], "score": 3})
    assert unknown_link.status_code == 404 and "Unknown participant link" in unknown_link.json()["error"]
    # hostile links (NUL bytes, which PostgreSQL cannot store, non-ASCII, too long) are unknown
    for bad_token in ("%00" * 24, "A" * 20 + "%00" + "A" * 11, "A" * 31 + "%0A", "%C3%A9" * 12,
                      "A" * 65):
        for path in (f"/api/p/{bad_token}/state", f"/p/{bad_token}"):
            assert client.get(path).status_code == 404, path
        reply = client.post(f"/api/p/{bad_token}/vote",
                            json={"position": 0, "nonce": item["nonce"], "score": 3})
        assert reply.status_code == 404, bad_token
    assert client.post(f"/api/p/{token}/vote", content=b"not json",
                       headers={"content-type": "application/json"}).status_code == 422
    assert all_votes(client) == []

    assert vote(client, token, item, 4).status_code == 200
    replay = vote(client, token, item, 2)
    assert replay.status_code == 409 and "already rated" in replay.json()["error"]
    [stored] = all_votes(client)
    assert stored["score"] == "4"

    # a nonce from one participant does not work for another
    other, other_state = join_and_consent(client)
    stolen = client.post(f"/api/p/{other}/vote", json={
        "position": other_state["item"]["position"], "nonce": state["item"]["nonce"], "score": 3})
    assert stolen.status_code == 403

    # finish, then reuse the link
    state = client.get(f"/api/p/{token}/state").json()
    while state["stage"] == "rate":
        state = vote(client, token, state["item"], 3).json()
    assert state["stage"] == "done"
    before = len(all_votes(client))
    again = vote(client, token, {"position": 5, "nonce": "x" * 32}, 3)
    assert again.status_code == 409 and "already used to complete" in again.json()["error"]
    consent = client.post(f"/api/p/{token}/consent", json={"consent": True, "answers": {"display": "TV"}})
    assert consent.status_code == 409
    assert client.get(f"/api/p/{token}/media/5").status_code == 404
    assert len(all_votes(client)) == before


def check_database_of_another_study_is_refused(study_file: Path, db_url: str, tmp_path: Path) -> None:
    """A database made for one study refuses to open for another."""
    StudyStore(load_study(study_file), db_url).close()
    other = make_image_study(tmp_path / "other", contents=2, levels=2, items=3)
    with pytest.raises(ConfigError, match="holds another study"):
        StudyStore(load_study(other), db_url)
    StudyStore(load_study(study_file), db_url).close()  # the right study still opens it


def check_votes_survive_a_killed_server(study_file: Path, db_url: str, tmp_path: Path) -> None:
    """SIGKILL while participants are voting: every vote answered 200 is there after the
    restart, and each session resumes at its next item."""
    server = StudyServer(study_file, db_url, log_file=tmp_path / "server.log").start()
    acknowledged: dict[str, list[tuple[int, int]]] = {}
    tokens = []
    try:
        with httpx.Client(base_url=server.base_url, timeout=5) as client:
            for _ in range(4):
                token, _ = join_and_consent(client)
                tokens.append(token)
                acknowledged[token] = []
        stop = threading.Event()

        def voter(token):
            with httpx.Client(base_url=server.base_url, timeout=5) as client:
                try:
                    state = client.get(f"/api/p/{token}/state").json()
                    while (state["stage"] == "rate" and not stop.is_set()
                           and len(acknowledged[token]) < 4):
                        score = 1 + state["item"]["position"] % 5
                        reply = vote(client, token, state["item"], score)
                        if reply.status_code != 200:
                            return
                        acknowledged[token].append((state["item"]["position"], score))
                        state = reply.json()
                        time.sleep(0.01)
                except httpx.HTTPError:
                    return  # the server died under us

        threads = [threading.Thread(target=voter, args=(t,)) for t in tokens]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while sum(len(v) for v in acknowledged.values()) < 6 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    finally:
        server.stop()
    assert sum(len(v) for v in acknowledged.values()) >= 6

    with StudyServer(study_file, db_url, log_file=tmp_path / "server.log") as again, \
            httpx.Client(base_url=again.base_url, timeout=5) as client:
        stored = {(r["observer"], int(r["position"])): int(r["score"]) for r in all_votes(client)}
        progress = client.get("/api/admin/progress", headers=ADMIN).json()
        observer_of = {p["link_token"]: p["observer"] for p in progress["participants"]}
        for token, votes in acknowledged.items():
            observer = observer_of[token]
            for position, score in votes:
                assert stored[(observer, position)] == score
            given = sum(1 for key in stored if key[0] == observer)
            state = client.get(f"/p/{token}").status_code, client.get(f"/api/p/{token}/state").json()
            assert state[0] == 200
            assert state[1]["stage"] == "rate" and state[1]["position"] == given
            # the resumed session goes on: the next vote is taken
            assert vote(client, token, state[1]["item"], 3).status_code == 200

