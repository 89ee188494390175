"""The study app over real HTTP on loopback: config validation, ordering, the participant
flow, bad and hostile input, experimenter access, export -> analyze, a SIGKILLed server and
20 participants at once."""
from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
uvicorn = pytest.importorskip("uvicorn")
from typer.testing import CliRunner  # noqa: E402

from gameqa.bench.study_load import (ADMIN_TOKEN, StudyServer, free_port,  # noqa: E402
                                     make_image_study, run_study_load)
from gameqa.errors import ConfigError  # noqa: E402
from gameqa.subjective import read_votes_csv  # noqa: E402
from gameqa.subjective.app import create_app  # noqa: E402
from gameqa.subjective.cli import study_app  # noqa: E402
from gameqa.subjective.store import StudyStore  # noqa: E402
from gameqa.subjective.study import load_study, order_items, plan_session  # noqa: E402

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class ThreadServer:
    """The app under uvicorn in a thread of this process, on a free loopback port."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture()
def study_file(tmp_path) -> Path:
    """3 contents x 2 qualities of PNG, 1 training image, 4 distinct + 1 repeat per session."""
    return make_image_study(tmp_path / "study", contents=3, levels=2, items=4, repeats=1)


@pytest.fixture()
def live(study_file, tmp_path):
    """(base URL, httpx client) of a running app on a fresh SQLite file."""
    app = create_app(load_study(study_file), f"sqlite:///{tmp_path / 'votes.sqlite'}")
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield server.url, client


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


# --- study definition ------------------------------------------------------------------

def _toml(tmp_path, study_extra="", entries='[[stimuli]]\nid = "a"\nfile = "a.png"\n'):
    folder = tmp_path / "s"
    (folder / "stim").mkdir(parents=True, exist_ok=True)
    from PIL import Image
    Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "stim" / "a.png")
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "secret.png")
    path = folder / "study.toml"
    path.write_text(f'[study]\nname = "x"\nstimulus_dir = "stim"\n{study_extra}\n{entries}')
    return path


@pytest.mark.parametrize("extra, entries, problem", [
    ('method = "acr7"', None, "study.method 'acr7' is not one of"),
    ("", '[[stimuli]]\nid = "a"\nfile = "../../secret.png"\n', "outside the stimulus folder"),
    ("", '[[stimuli]]\nid = "a"\nfile = "/etc/hostname"\n', "must be relative"),
    ("", '[[stimuli]]\nid = "a"\nfile = "missing.png"\n', "not found"),
    ("", '[[stimuli]]\nid = "a"\nfile = "a.png"\n[[training]]\nid = "a"\nfile = "a.png"\n',
     "duplicate stimulus id(s): a"),
    ("repeats = 2", None, "must be between the repeats and the number of stimuli"),
    ("colour = 1", None, "unknown study key(s) colour"),
    ('experimenter_token = "short"', None, "16 or more characters"),
    ("", '[[stimuli]]\nid = "a/b"\nfile = "a.png"\n', "must be 1-128 letters"),
    ('stimulus_glob = "../*.png"', "", "must stay inside the stimulus folder"),
])
def test_load_study_refuses_bad_definitions(tmp_path, monkeypatch, extra, entries, problem):
    monkeypatch.delenv("GAMEQA_STUDY_TOKEN", raising=False)
    path = _toml(tmp_path, extra, *(() if entries is None else (entries,)))
    with pytest.raises(ConfigError) as caught:
        load_study(path)
    assert problem in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_load_study_refuses_symlink_out_of_folder(tmp_path):
    path = _toml(tmp_path, "", '[[stimuli]]\nid = "a"\nfile = "link.png"\n')
    os.symlink(tmp_path / "secret.png", path.parent / "stim" / "link.png")
    with pytest.raises(ConfigError, match="outside the stimulus folder"):
        load_study(path)


def test_example_study_definition_loads(tmp_path, tiny_video):
    example = Path(__file__).resolve().parents[1] / "examples" / "study" / "study.toml"
    folder = tmp_path / "example"
    (folder / "stimuli").mkdir(parents=True)
    shutil.copy(example, folder / "study.toml")
    names = [f"{c}_{q}.webm" for c in ("opening", "battle") for q in ("q1", "q2", "q3", "q4")]
    for name in names + ["train_best.webm", "train_worst.webm"]:
        shutil.copy(tiny_video, folder / "stimuli" / name)
    study = load_study(folder / "study.toml")
    assert {s.content for s in study.stimuli} == {"opening", "battle"}
    assert len(study.stimuli) == 8 and [t.id for t in study.training] == ["train_best", "train_worst"]
    assert study.scale == (1, 5) and study.session_items == 10 and study.repeats == 2


# --- ordering ---------------------------------------------------------------------------

def test_orders_never_repeat_a_stimulus_or_content_back_to_back():
    orders = set()
    for seed in range(300):
        rng = random.Random(seed)
        contents = rng.randint(2, 5)
        items = [(f"s{c}_{k}", f"c{c}") for c in range(contents) for k in range(rng.randint(1, 4))]
        items += rng.sample(items, rng.randint(0, 3))  # repeats
        order = order_items(items, rng)
        assert Counter(order) == Counter(items)
        feasible = max(Counter(c for _, c in items).values()) <= (len(items) + 1) // 2
        for before, after in zip(order, order[1:]):
            assert before[0] != after[0] or max(Counter(items).values()) > (len(items) + 1) // 2
            if feasible:
                assert before[1] != after[1], (seed, order)
        if seed < 50 and contents == 3:
            orders.add(tuple(order))
    assert len(orders) > 1
    # one content only: no content alternation possible, still no stimulus twice in a row
    items = [("a", "x"), ("b", "x"), ("c", "x"), ("a", "x")]
    for seed in range(50):
        order = order_items(items, random.Random(seed))
        assert all(p[0] != q[0] for p, q in zip(order, order[1:]))


def test_plan_session_prefers_least_rated_stimuli(study_file):
    study = load_study(study_file)
    counts = {s.id: 5 for s in study.stimuli}
    fresh = [s.id for s in study.stimuli[:4]]
    for stimulus_id in fresh:
        counts[stimulus_id] = 0
    plan = plan_session(study, counts, random.Random(1))
    assert [p.phase for p in plan] == ["training"] + ["main"] * 5
    main = [p for p in plan if p.phase == "main"]
    assert {p.stimulus_id for p in main} == set(fresh)
    assert sum(p.repeat for p in main) == 1
    assert all(a.content != b.content for a, b in zip(main, main[1:]))


# --- participant flow -------------------------------------------------------------------

@pytest.fixture()
def full_design(tmp_path):
    """(study file, base URL, client): every participant rates all 6 stimuli (+1 repeat)."""
    study_file = make_image_study(tmp_path / "full", contents=3, levels=2, items=6, repeats=1)
    app = create_app(load_study(study_file), f"sqlite:///{tmp_path / 'votes.sqlite'}")
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield study_file, server.url, client


def test_full_session_export_and_analyze(full_design, tmp_path):
    study_file, url, client = full_design
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
    result = runner.invoke(study_app, ["export", str(study_file), "--db",
                                       f"sqlite:///{tmp_path / 'votes.sqlite'}", "--out", str(out_csv)])
    assert result.exit_code == 0, result.output
    assert sorted(out_csv.read_text().splitlines()) == sorted(exported.text.splitlines())


def test_bad_votes_are_refused_and_nothing_is_stored(live):
    _, client = live
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
    ahead = client.post(f"/api/p/{token}/vote",
                        json={"position": item["position"] + 1, "nonce": item["nonce"], "score": 3})
    assert ahead.status_code == 403
    unknown_link = client.post("/api/p/" + "A" * 32 + "/vote",
                               json={"position": 0, "nonce": item["nonce"], "score": 3})
    assert unknown_link.status_code == 404 and "Unknown participant link" in unknown_link.json()["error"]
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


def test_consent_answers_are_checked(live):
    _, client = live
    token = client.post("/api/join").json()["token"]
    assert client.get(f"/api/p/{token}/state").json()["stage"] == "consent"
    assert client.get(f"/api/p/{token}/media/0").status_code == 404  # nothing before consent
    reply = client.post(f"/api/p/{token}/consent", json={"consent": False, "answers": {}})
    assert reply.status_code == 400
    reply = client.post(f"/api/p/{token}/consent", json={"consent": True, "answers": {}})
    assert reply.status_code == 400 and "Which screen" in reply.json()["error"]
    reply = client.post(f"/api/p/{token}/consent", json={"consent": True, "answers": {"display": "VR"}})
    assert reply.status_code == 400 and "not a choice" in reply.json()["error"]
    assert client.get(f"/api/p/{token}/state").json()["stage"] == "consent"
    vote_early = client.post(f"/api/p/{token}/vote", json={"position": 0, "nonce": "x" * 30, "score": 3})
    assert vote_early.status_code == 409


def test_experimenter_pages_need_the_token_and_files_stay_private(live, study_file):
    _, client = live
    token, state = join_and_consent(client)
    for path in ("/api/admin/progress", "/api/admin/votes.csv"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong-token-123456"}).status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert client.get(path, params={"token": ADMIN_TOKEN}).status_code == 401
    assert client.post("/api/admin/links", json={"count": 1}).status_code == 401
    assert client.get("/api/admin/progress", headers=ADMIN).status_code == 200
    # the participant API says nothing about stimuli ids, files or other participants
    text = json.dumps(state)
    study = load_study(study_file)
    assert not any(s.id in text or s.path.name in text for s in (*study.stimuli, *study.training))
    # only the item on screen can be fetched; nothing else reaches the disk
    assert client.get(f"/api/p/{token}/media/{state['item']['position']}").status_code == 200
    for path in (f"/api/p/{token}/media/{state['item']['position'] + 1}",
                 f"/api/p/{token}/media/-1",
                 f"/api/p/{token}/media/..%2F..%2Fstudy.toml",
                 f"/api/p/{token}/media/0%2F..%2F..%2Fstudy.toml",
                 "/static/..%2F..%2Fstudy.py", "/static/%2e%2e/app.py",
                 "/stimuli/c0_q0.png", "/study.toml"):
        reply = client.get(path)
        assert reply.status_code in (404, 422), path
        assert b"gameqa" not in reply.content and b"PNG" not in reply.content, path
    page = client.get("/p/" + "B" * 32)
    assert page.status_code == 404 and "Unknown participant link" in page.text
    headers = client.get("/join").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"


# --- capacity, closed studies, databases ------------------------------------------------

def test_full_study_and_invitation_links(tmp_path, monkeypatch):
    study_file = make_image_study(tmp_path / "s", contents=2, levels=2, items=4, repeats=0,
                                  ratings=1, training=0)
    text = study_file.read_text().replace('title = "Load test"', 'title = "Closed"\nopen_join = false')
    study_file.write_text(text)
    db = f"sqlite:///{tmp_path / 'v.sqlite'}"
    runner = CliRunner()
    result = runner.invoke(study_app, ["links", str(study_file), "--db", db, "-n", "2",
                                       "--base-url", "http://example.test:9000"])
    assert result.exit_code == 0, result.output
    links = result.stdout.split()
    assert len(links) == 2 and all(link.startswith("http://example.test:9000/p/") for link in links)
    app = create_app(load_study(study_file), db)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/api/join").status_code == 403
        token = links[0].rsplit("/", 1)[1]
        state = client.post(f"/api/p/{token}/consent",
                            json={"consent": True, "answers": {"display": "TV"}}).json()
        while state["stage"] == "rate":
            state = vote(client, token, state["item"], 5).json()
        # every stimulus has its one rating now: no new participants
        reply = client.post("/api/admin/links", json={"count": 1}, headers=ADMIN)
        assert reply.status_code == 409 and "all the ratings it needs" in reply.json()["error"]
        assert client.get("/api/admin/progress", headers=ADMIN).json()["full"] is True


def test_database_of_another_study_is_refused(tmp_path, study_file):
    db = f"sqlite:///{tmp_path / 'v.sqlite'}"
    StudyStore(load_study(study_file), db).close()
    other = make_image_study(tmp_path / "other", contents=2, levels=2, items=3)
    with pytest.raises(ConfigError, match="holds another study"):
        StudyStore(load_study(other), db)
    with pytest.raises(ConfigError, match="cannot open the database"):
        StudyStore(load_study(other), "nosuchdialect://x")
    with pytest.raises(ConfigError, match="does not exist"):
        StudyStore(load_study(other), f"sqlite:///{tmp_path / 'missing' / 'v.sqlite'}")


def test_votes_survive_a_killed_server_and_sessions_resume(tmp_path, study_file):
    """SIGKILL while participants are voting: every vote answered 200 is there after the
    restart, and each session resumes at its next item."""
    db = f"sqlite:///{tmp_path / 'votes.sqlite'}"
    server = StudyServer(study_file, db, log_file=tmp_path / "server.log").start()
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

    with StudyServer(study_file, db, log_file=tmp_path / "server.log") as again, \
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


def test_twenty_participants_at_once(tmp_path):
    report = run_study_load(participants=20, items=4, repeats=1, timeout_s=60,
                            workdir=tmp_path)
    assert report["errors"] == []
    assert report["votes_accepted"] == 20 * 6 == report["votes_exported"]
    assert report["latency_ms"]["vote"]["n"] == 120
