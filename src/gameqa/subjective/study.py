"""A subjective study's definition (read from STUDY.toml) and each participant's item order.

A study names its stimuli (videos or images inside the study's folder), the rating method
(ACR 5-point per ITU-T P.910, an 11-point 0..10 scale, or a 1..10 scale), how many
ratings each stimulus should get, training stimuli, how many stimuli each participant
sees twice (consistency checks) and how many items one session holds. Orders differ per
participant: never the same stimulus twice in a row, and never two stimuli of the same
source content in a row whenever the session's contents allow it.
"""
from __future__ import annotations

import glob
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gameqa.errors import ConfigError, read_config_text

__all__ = ["METHODS", "RatingMethod", "Stimulus", "Question", "Study", "load_study",
           "plan_session", "order_items"]

VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".mov", ".ogv", ".m4v"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".avif"}


@dataclass(frozen=True)
class RatingMethod:
    """An integer rating scale ``low..high``; ``labels`` maps some values to words."""

    name: str
    low: int
    high: int
    labels: dict[int, str]
    description: str

    @property
    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1))


METHODS: dict[str, RatingMethod] = {
    "acr5": RatingMethod("acr5", 1, 5, {5: "Excellent", 4: "Good", 3: "Fair", 2: "Poor", 1: "Bad"},
                         "Absolute Category Rating, 5 points (ITU-T P.910)"),
    "scale11": RatingMethod("scale11", 0, 10, {0: "Worst", 10: "Best"},
                            "11-point scale 0..10"),
    "scale10": RatingMethod("scale10", 1, 10, {1: "Worst", 10: "Best"}, "10-point scale 1..10"),
}


@dataclass(frozen=True)
class Stimulus:
    """One file to rate: its id, its path (inside the study folder), its source content and
    its kind ("video" or "image")."""

    id: str
    path: Path
    content: str
    kind: str


@dataclass(frozen=True)
class Question:
    """A viewing-condition question: free text when ``choices`` is empty."""

    id: str
    text: str
    choices: tuple[str, ...] = ()


DEFAULT_CONSENT = ("You are invited to rate the visual quality of short game clips or images. "
                   "Taking part is voluntary and you may stop at any time. We store only your "
                   "ratings, your answers about your viewing conditions and timing data, under "
                   "a random identifier.")

DEFAULT_INSTRUCTIONS = ("Each clip plays once in full screen. When it ends, rate its overall "
                        "visual quality. Rate by your first impression; there are no right or "
                        "wrong answers.")


@dataclass(frozen=True)
class Study:
    """A validated study definition. ``folder`` is the study's folder: every stimulus file lies
    inside it (symlinks resolved)."""

    name: str
    title: str
    folder: Path
    method: RatingMethod
    stimuli: tuple[Stimulus, ...]
    training: tuple[Stimulus, ...]
    questions: tuple[Question, ...]
    ratings_per_stimulus: int
    session_items: int
    repeats: int
    image_seconds: float
    open_join: bool
    consent: str
    instructions: str
    experimenter_token: str | None
    source: Path | None = None
    by_id: dict[str, Stimulus] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id.update({s.id: s for s in (*self.stimuli, *self.training)})

    @property
    def scale(self) -> tuple[int, int]:
        return (self.method.low, self.method.high)

    def fingerprint(self) -> str:
        """What a vote database must match: the study name and its stimulus/content ids."""
        items = ",".join(f"{s.id}:{s.content}" for s in self.stimuli)
        return f"{self.name}|{self.method.name}|{items}"


_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KNOWN_KEYS = {"study", "stimuli", "training", "questions"}
_STUDY_KEYS = {"name", "title", "method", "stimulus_dir", "ratings_per_stimulus", "session_items",
               "repeats", "image_seconds", "open_join", "consent", "instructions",
               "experimenter_token", "stimulus_glob", "content_pattern"}


def _kind_of(path: Path, source: Path) -> str:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    raise ConfigError(source, f"stimulus {path.name!r}: unknown file type {ext or '(none)'} "
                              f"(videos: {', '.join(sorted(VIDEO_EXTENSIONS))}; images: "
                              f"{', '.join(sorted(IMAGE_EXTENSIONS))})")


def _inside(folder: Path, relative: str, source: Path, what: str) -> Path:
    """The resolved file ``folder/relative``, refused unless it is a regular file inside
    ``folder`` (no absolute paths, no '..', no symlink pointing out)."""
    if not isinstance(relative, str) or not relative:
        raise ConfigError(source, f"{what}: 'file' must be a non-empty relative path")
    if os.path.isabs(relative) or relative.startswith(("/", "\\")):
        raise ConfigError(source, f"{what}: file {relative!r} must be relative to the stimulus folder")
    resolved = (folder / relative).resolve()
    if not resolved.is_relative_to(folder):
        raise ConfigError(source, f"{what}: file {relative!r} lies outside the stimulus folder {folder}")
    if not resolved.is_file():
        raise ConfigError(source, f"{what}: file {relative!r} not found in {folder}")
    return resolved


def _stimulus_list(entries, folder: Path, source: Path, section: str) -> list[Stimulus]:
    if not isinstance(entries, list):
        raise ConfigError(source, f"[[{section}]] must be an array of tables")
    result = []
    for index, entry in enumerate(entries):
        where = f"{section}[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(source, f"{where} must be a table with id, file[, content]")
        unknown = set(entry) - {"id", "file", "content"}
        if unknown:
            raise ConfigError(source, f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        path = _inside(folder, entry.get("file"), source, where)
        stimulus_id = str(entry.get("id", Path(entry["file"]).stem))
        if not _ID_PATTERN.match(stimulus_id):
            raise ConfigError(source, f"{where}: id {stimulus_id!r} must be 1-128 letters, digits, "
                                      "'.', '_' or '-'")
        content = str(entry.get("content", stimulus_id))
        result.append(Stimulus(stimulus_id, path, content, _kind_of(path, source)))
    return result


def _globbed_stimuli(pattern: str, content_pattern: str | None, folder: Path,
                     source: Path) -> list[Stimulus]:
    if os.path.isabs(pattern) or ".." in Path(pattern).parts:
        raise ConfigError(source, f"stimulus_glob {pattern!r} must stay inside the stimulus folder")
    if content_pattern is not None and not isinstance(content_pattern, str):
        raise ConfigError(source, f"content_pattern must be a string (a regex), not {content_pattern!r}")
    try:
        regex = re.compile(content_pattern) if content_pattern else None
    except re.error as err:
        raise ConfigError(source, f"content_pattern {content_pattern!r} is not a regex ({err})") from None
    result = []
    for name in sorted(glob.glob(pattern, root_dir=folder)):
        path = _inside(folder, name, source, f"stimulus_glob match {name!r}")
        stimulus_id = Path(name).stem
        content = stimulus_id
        if regex is not None:
            match = regex.search(stimulus_id)
            if not match:
                raise ConfigError(source, f"content_pattern {content_pattern!r} does not match "
                                          f"stimulus {stimulus_id!r}")
            content = match.group(1) if match.groups() else match.group(0)
            if not content:
                raise ConfigError(source, f"content_pattern {content_pattern!r} gives no content for "
                                          f"stimulus {stimulus_id!r} (its match is empty)")
        result.append(Stimulus(stimulus_id, path, content, _kind_of(path, source)))
    if not result:
        raise ConfigError(source, f"stimulus_glob {pattern!r} matched no file in {folder}")
    return result


def _int(table: dict, key: str, default: int, source: Path, minimum: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(source, f"study.{key} must be an integer >= {minimum}, not {value!r}")
    return value


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a STUDY.toml. Relative stimulus paths are taken from
    ``study.stimulus_dir`` (default: the TOML's own folder); every file must lie inside it.
    The experimenter token is ``study.experimenter_token`` or the environment variable
    ``GAMEQA_STUDY_TOKEN`` (the variable wins)."""
    source = Path(path)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError(source, "reading TOML on Python 3.10 needs the 'tomli' package") from None
    text = read_config_text(source, "study file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, f"not valid TOML ({err})") from None
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(source, f"unknown section(s) {', '.join(sorted(unknown))} "
                                  f"(known: {', '.join(sorted(_KNOWN_KEYS))})")
    table = data.get("study", {})
    if not isinstance(table, dict):
        raise ConfigError(source, "[study] must be a table")
    unknown = set(table) - _STUDY_KEYS
    if unknown:
        raise ConfigError(source, f"unknown study key(s) {', '.join(sorted(unknown))}")

    name = str(table.get("name", source.parent.name or "study"))
    if not _ID_PATTERN.match(name):
        raise ConfigError(source, f"study.name {name!r} must be letters, digits, '.', '_' or '-'")
    method_name = table.get("method", "acr5")
    if method_name not in METHODS:
        raise ConfigError(source, f"study.method {method_name!r} is not one of "
                                  f"{', '.join(METHODS)}")
    folder = (source.parent / str(table.get("stimulus_dir", "."))).resolve()
    if not folder.is_dir():
        raise ConfigError(source, f"stimulus folder {folder} does not exist")

    if "stimuli" in data and "stimulus_glob" in table:
        raise ConfigError(source, "give either [[stimuli]] or study.stimulus_glob, not both")
    if "stimulus_glob" in table:
        stimuli = _globbed_stimuli(str(table["stimulus_glob"]), table.get("content_pattern"),
                                   folder, source)
    elif "stimuli" in data:
        stimuli = _stimulus_list(data["stimuli"], folder, source, "stimuli")
    else:
        raise ConfigError(source, "no stimuli: add [[stimuli]] entries or study.stimulus_glob")
    training = _stimulus_list(data.get("training", []), folder, source, "training")
    ids = [s.id for s in (*stimuli, *training)]
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ConfigError(source, f"duplicate stimulus id(s): {', '.join(duplicates)}")

    questions = []
    raw_questions = data.get("questions", [])
    if not isinstance(raw_questions, list):
        raise ConfigError(source, "[[questions]] must be an array of tables")
    for index, entry in enumerate(raw_questions):
        if not isinstance(entry, dict) or "id" not in entry or "text" not in entry:
            raise ConfigError(source, f"questions[{index}] needs an id and a text")
        choices = entry.get("choices", [])
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise ConfigError(source, f"questions[{index}].choices must be a list of strings")
        questions.append(Question(str(entry["id"]), str(entry["text"]), tuple(choices)))
    if len({q.id for q in questions}) != len(questions):
        raise ConfigError(source, "question ids are not unique")

    ratings = _int(table, "ratings_per_stimulus", 15, source, 1)
    repeats = _int(table, "repeats", 0, source, 0)
    session_items = _int(table, "session_items", len(stimuli) + repeats, source, 1)
    distinct = session_items - repeats
    if distinct < 1 or distinct > len(stimuli) or repeats > distinct:
        raise ConfigError(source, f"study.session_items ({session_items}) minus study.repeats "
                                  f"({repeats}) must be between the repeats and the number of "
                                  f"stimuli ({len(stimuli)}), and at least 1")
    image_seconds = table.get("image_seconds", 5.0)
    if isinstance(image_seconds, bool) or not isinstance(image_seconds, (int, float)) \
            or not 0 < image_seconds <= 600:
        raise ConfigError(source, f"study.image_seconds must be a number in (0, 600], "
                                  f"not {image_seconds!r}")
    token = os.environ.get("GAMEQA_STUDY_TOKEN") or table.get("experimenter_token")
    if token is not None and (not isinstance(token, str) or len(token) < 16):
        raise ConfigError(source, "the experimenter token must be a string of 16 or more characters")
    open_join = table.get("open_join", True)
    if not isinstance(open_join, bool):
        raise ConfigError(source, "study.open_join must be true or false")
    return Study(name=name, title=str(table.get("title", name)), folder=folder,
                 method=METHODS[method_name], stimuli=tuple(stimuli), training=tuple(training),
                 questions=tuple(questions), ratings_per_stimulus=ratings,
                 session_items=session_items, repeats=repeats, image_seconds=float(image_seconds),
                 open_join=open_join, consent=str(table.get("consent", DEFAULT_CONSENT)),
                 instructions=str(table.get("instructions", DEFAULT_INSTRUCTIONS)),
                 experimenter_token=token, source=source.resolve())


# --- ordering -------------------------------------------------------------------------

def _can_follow(counts: Counter, forbidden_first) -> bool:
    """Whether the multiset ``counts`` can be laid out with no two equal neighbours and a
    first element other than ``forbidden_first``."""
    remaining = sum(counts.values())
    for key, count in counts.items():
        limit = remaining // 2 if key == forbidden_first else (remaining + 1) // 2
        if count > limit:
            return False
    return True


def order_items(items: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    """A random order of ``(stimulus_id, content)`` items with no two neighbours of the same
    content, or, when the contents make that impossible, with no two neighbours of the same
    stimulus; a plain shuffle when even that is impossible.

    Each step picks uniformly among the items that still leave a valid completion, so the
    order is random and always completes when one exists.
    """
    for key_of in (lambda item: item[1], lambda item: item[0]):
        counts = Counter(key_of(item) for item in items)
        if not _can_follow(counts, None):
            continue
        pool = list(items)
        rng.shuffle(pool)
        order, last = [], None
        while pool:
            choices = []
            for index, item in enumerate(pool):
                key = key_of(item)
                if key == last:
                    continue
                counts[key] -= 1
                if _can_follow(counts, key):
                    choices.append(index)
                counts[key] += 1
            index = rng.choice(choices)
            item = pool.pop(index)
            counts[key_of(item)] -= 1
            last = key_of(item)
            order.append(item)
        return order
    shuffled = list(items)
    rng.shuffle(shuffled)
    return shuffled


@dataclass(frozen=True)
class PlannedItem:
    """One presentation in a participant's session."""

    stimulus_id: str
    content: str
    phase: str  # "training" or "main"
    repeat: bool


def plan_session(study: Study, assigned_counts: dict[str, int],
                 rng: random.Random | None = None) -> list[PlannedItem]:
    """A new participant's items: the training stimuli in their listed order, then
    ``session_items`` presentations in a random order: ``session_items - repeats`` distinct
    stimuli, those with the fewest assignments so far (ties: contents not yet chosen first,
    then at random), and ``repeats`` of them shown a second time.
    """
    rng = rng or random.SystemRandom()
    num_distinct = study.session_items - study.repeats
    # fewest assignments first; among those, contents chosen least so far; then at random
    candidates = list(study.stimuli)
    tiebreak = {s.id: rng.random() for s in candidates}
    chosen: list[Stimulus] = []
    content_counts: Counter = Counter()
    for _ in range(num_distinct):
        best = min(candidates, key=lambda s: (assigned_counts.get(s.id, 0),
                                              content_counts[s.content], tiebreak[s.id]))
        candidates.remove(best)
        chosen.append(best)
        content_counts[best.content] += 1
    # repeats: stimuli of the least frequent contents, so the order can still alternate
    repeated: list[Stimulus] = []
    pool = list(chosen)
    for _ in range(min(study.repeats, len(chosen))):
        pick = min(pool, key=lambda s: (content_counts[s.content], rng.random()))
        pool.remove(pick)
        repeated.append(pick)
        content_counts[pick.content] += 1
    main = [(s.id, s.content) for s in chosen] + [(s.id, s.content) for s in repeated]
    ordered = order_items(main, rng)
    plan = [PlannedItem(s.id, s.content, "training", False) for s in study.training]
    seen: set[str] = set()
    for stimulus_id, content in ordered:
        plan.append(PlannedItem(stimulus_id, content, "main", stimulus_id in seen))
        seen.add(stimulus_id)
    return plan
