"""The study app over real HTTP on loopback: config validation, ordering, the participant
flow, bad and hostile input, experimenter access, export -> analyze, a SIGKILLed server and
20 participants at once."""
from __future__ import annotations

import json
import os
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
pytest.importorskip("uvicorn")
from study_checks import (ADMIN, ThreadServer,  # noqa: E402,F401 - study_file is a fixture
                          check_bad_votes_are_refused, study_file, check_database_of_another_study_is_refused,
                          check_full_session_export_and_analyze,
                          check_votes_survive_a_killed_server, join_and_consent, vote)
from typer.testing import CliRunner  # noqa: E402

from gameqa.bench.study_load import ADMIN_TOKEN, make_image_study, run_study_load  # noqa: E402
from gameqa.errors import ConfigError  # noqa: E402
from gameqa.subjective.app import create_app  # noqa: E402
from gameqa.subjective.cli import study_app  # noqa: E402
from gameqa.subjective.store import StudyStore  # noqa: E402
from gameqa.subjective.study import load_study, order_items, plan_session  # noqa: E402


@pytest.fixture()
def live(study_file, tmp_path):
    """(base URL, httpx client) of a running app on a fresh SQLite file."""
    app = create_app(load_study(study_file), f"sqlite:///{tmp_path / 'votes.sqlite'}")
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield server.url, client


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
    ('stimulus_glob = "*.png"\ncontent_pattern = "^(x)?"', "", "gives no content for stimulus 'a'"),
    ('stimulus_glob = "*.png"\ncontent_pattern = 5', "", "content_pattern must be a string"),
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

def test_full_session_export_and_analyze(tmp_path):
    study_file = make_image_study(tmp_path / "full", contents=3, levels=2, items=6, repeats=1)
    check_full_session_export_and_analyze(study_file, f"sqlite:///{tmp_path / 'votes.sqlite'}",
                                          tmp_path)


def test_bad_votes_are_refused_and_nothing_is_stored(live):
    check_bad_votes_are_refused(live[1])


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
    check_database_of_another_study_is_refused(study_file, f"sqlite:///{tmp_path / 'v.sqlite'}",
                                               tmp_path)
    with pytest.raises(ConfigError, match="cannot open the database"):
        StudyStore(load_study(study_file), "nosuchdialect://x")
    with pytest.raises(ConfigError, match="does not exist"):
        StudyStore(load_study(study_file), f"sqlite:///{tmp_path / 'missing' / 'v.sqlite'}")


def test_a_study_file_that_dropped_a_stimulus_someone_was_given_is_refused(tmp_path, study_file):
    """Training stimuli are not in the fingerprint: removing one a participant already has on screen is
    caught when the database is opened, not by the participant's page failing."""
    db = f"sqlite:///{tmp_path / 'v.sqlite'}"
    app = create_app(load_study(study_file), db)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        token, state = join_and_consent(client)
    assert state["item"]["phase"] == "training"
    app.state.store.close()
    text = study_file.read_text()
    start = text.index("[[training]]")
    study_file.write_text(text[:start] + text[start:].split("\n", 3)[3])  # the entry's 3 lines gone
    assert not load_study(study_file).training
    with pytest.raises(ConfigError, match=r"no longer lists \(train0\)"):
        StudyStore(load_study(study_file), db)


def test_export_and_serve_refuse_bad_options_before_touching_a_database(tmp_path, study_file):
    runner = CliRunner()
    typo = tmp_path / "typo.sqlite"
    result = runner.invoke(study_app, ["export", str(study_file), "--db", f"sqlite:///{typo}",
                                       "-o", str(tmp_path / "votes.csv")])
    assert result.exit_code == 1 and "no such database file" in result.output
    assert not typo.exists() and not (tmp_path / "votes.csv").exists()
    for option in (["--port", "70000"], ["--log-level", "bogus"]):
        result = runner.invoke(study_app, ["serve", str(study_file), "--db", f"sqlite:///{typo}", *option])
        assert result.exit_code == 2, result.output
        assert not typo.exists()
    assert "'bogus' is not one of critical, error" in result.output


def test_votes_survive_a_killed_server_and_sessions_resume(tmp_path, study_file):
    """SIGKILL while participants are voting: every vote answered 200 is there after the
    restart, and each session resumes at its next item."""
    check_votes_survive_a_killed_server(study_file, f"sqlite:///{tmp_path / 'votes.sqlite'}",
                                        tmp_path)



def test_twenty_participants_at_once(tmp_path):
    report = run_study_load(participants=20, items=4, repeats=1, timeout_s=60,
                            workdir=tmp_path)
    assert report["errors"] == []
    assert report["votes_accepted"] == 20 * 6 == report["votes_exported"]
    assert report["latency_ms"]["vote"]["n"] == 120
