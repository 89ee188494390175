"""Synthetic scroller contents (``gameqa corpus synth``): 2D scenes layered from real pictures, scrolled like a
platformer, then encoded and labelled like any source.

Leave-one-game-out runs misplace the levels of a game whose art the model has never seen (docs/models/eraque.md):
SuperTux's ice and its underground level are read as clean where the encoder smoothed their pattern away, because no
training game has that pattern. Each game brings a handful of art styles; these scenes bring many, at a known cost
and without a capture. A scene stacks, from back to front:

* a sky: a vertical gradient between two colours, a flat colour, or a picture tiled;
* a far layer (the upper part of the screen) and a ground band (the lower part), each a picture or texture of
  scikit-image's bundled data (photographs, brick, grass, gravel, cells, a galaxy field ...) tiled edge to edge,
  drawn at 1-3x its size (nearest neighbour: pixel-art blocks; or bicubic: smooth painted art), the far layer
  scrolling at half the ground's speed;
* sprites: cut-outs of the photographs crossing the screen at their own speeds;
* a heads-up display: a strip of printed text, still, in a corner;
* weather, in some: rain (thin light streaks falling fast at a slant) or snow (small flakes drifting down), the fine
  moving detail an encoder drops first at low rates and VMAF misses most (SuperTux's rain-swept going-underground
  level: labelled 1.0-2.5 at 150-500 kb/s, read a point higher by a model that never saw it rain);

and each scene is drawn with its own brightness (dark caves to bright snow) and, for some, a reduced palette (the
flat colours of pixel art). Everything follows from the scene's number and the seed, so a rebuild on another machine
makes the same sources pixel for pixel. Sources are lossless H.264 (as every soft source), all in the train split and
the manifest group ``synth``, which a trainer takes only when asked (``data.groups = ["game", "soft", "synth"]``); the
game is ``synthetic``, held out by no leave-one-game-out run.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from gameqa.data.corpus import build_corpus
from gameqa.data.ladder import Ladder
from gameqa.data.manifest import SYNTH_GROUP, write_manifest
from gameqa.errors import ConfigError, GameQAError
from gameqa.ffmpeg import ffmpeg_exe
from gameqa.sinks import make_folder, write_via_temp

__all__ = ["SYNTH_GAME", "PICTURES", "scene_plan", "scene_frames", "synth_sources", "synth_corpus"]

SYNTH_GAME = "synthetic"
WIDTH, HEIGHT, FPS = 1280, 720, 30
# scikit-image's bundled pictures (no download): textures and photographs for layers, photographs for sprites
PICTURES = ("astronaut", "brick", "grass", "gravel", "coffee", "chelsea", "rocket", "hubble_deep_field",
            "immunohistochemistry", "retina", "camera", "moon", "coins", "cell", "clock", "colorwheel")
SPRITES = ("astronaut", "coffee", "chelsea", "rocket", "coins", "clock")
SPEEDS = (1, 2, 3, 5, 8)  # ground scroll, pixels per frame


def _picture(name: str) -> np.ndarray:
    """A bundled scikit-image picture as uint8 RGB."""
    try:
        import skimage.data
    except ImportError:
        raise ConfigError(None, "gameqa corpus synth needs scikit-image (pip install 'gameqa[corpus]')") from None
    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype != np.uint8:
        img = (img * 255).astype(np.uint8) if img.dtype == bool else img.astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def scene_plan(index: int, seed: int = 0) -> dict:
    """The drawn choices of scene ``index`` (a dict of plain values; the CLI prints them as each scene is written)."""
    rng = np.random.default_rng([seed, index])
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    layer = lambda: {"picture": pick(PICTURES), "scale": int(rng.integers(1, 4)),  # noqa: E731
                     "smooth": bool(rng.random() < 0.4)}
    return {
        "sky": pick(("gradient", "gradient", "flat", "picture")),
        "sky_colours": rng.integers(0, 256, (2, 3)).tolist(),
        "sky_picture": layer(),
        "far": layer(), "far_top": float(rng.uniform(0.15, 0.45)), "far_bottom": float(rng.uniform(0.5, 0.7)),
        "ground": layer(), "ground_top": float(rng.uniform(0.65, 0.85)),
        "sprites": [{"picture": pick(SPRITES), "size": int(rng.integers(48, 160)),
                     "y": float(rng.uniform(0.2, 0.8)), "x": float(rng.uniform(0, 1)),
                     "vx": float(rng.uniform(-6, 6)), "vy": float(rng.uniform(-1.5, 1.5))}
                    for _ in range(int(rng.integers(0, 5)))],
        "hud": bool(rng.random() < 0.6),
        "speed": int(pick(SPEEDS)),
        "brightness": float(pick((0.3, 0.5, 0.75, 1.0, 1.0, 1.15))),
        "levels": int(pick((0, 0, 0, 4, 6))),  # colours per channel; 0 = the pictures' own
        "weather": _weather_plan(np.random.default_rng([seed, index, 1])),  # own stream: the rest stays as it was
    }


def _weather_plan(rng: np.random.Generator) -> dict:
    """No weather, rain or snow (4 : 3.5 : 2.5), with its particle count, seed, slant and opacity."""
    kind = ("none", "rain", "snow")[int(rng.choice(3, p=[0.4, 0.35, 0.25]))]
    return {"kind": kind, "count": int(rng.integers(300, 1200) if kind == "rain" else rng.integers(150, 700)),
            "seed": int(rng.integers(2**31)), "slant": float(rng.uniform(-0.4, 0.4)),
            "alpha": float(rng.uniform(0.45, 0.9))}


def _weather_pixels(weather: dict, frames: int, width: int, height: int):
    """Per frame, the (rows, cols) of the weather's pixels (None without weather): rain streaks 10-28 px long, 1 px
    wide, falling 16-30 px a frame along the slant; snowflakes of 2x2 or 3x3 px drifting down 1-3 px a frame."""
    if weather["kind"] == "none":
        return None
    rng = np.random.default_rng(weather["seed"])
    n = weather["count"]
    x0, y0 = rng.uniform(0, width, n), rng.uniform(0, height, n)
    if weather["kind"] == "rain":
        vy = rng.uniform(16, 30, n)
        vx = vy * weather["slant"]
        length = rng.integers(10, 29, n)
        t = np.arange(28)[None, :]
        keep = t < length[:, None]
        dy, dx = (t * np.ones((n, 1)))[keep], (t * weather["slant"] * np.ones((n, 1)))[keep]
        owner = np.nonzero(keep)[0]
    else:
        vy = rng.uniform(1, 3, n)
        vx = rng.uniform(-0.8, 0.8, n)
        side = rng.integers(2, 4, n)
        offsets = [(a, b) for a in range(3) for b in range(3)]
        keep = np.array([[a < s and b < s for a, b in offsets] for s in side])
        dy = np.array([a for a, _ in offsets] * n, float).reshape(n, 9)[keep]
        dx = np.array([b for _, b in offsets] * n, float).reshape(n, 9)[keep]
        owner = np.nonzero(keep)[0]
    return (((y0[owner] + vy[owner] * f + dy).astype(int) % height,
             (x0[owner] + vx[owner] * f + dx).astype(int) % width) for f in range(frames))


def _scaled(img: np.ndarray, scale: int, smooth: bool) -> np.ndarray:
    if scale == 1:
        return img
    if not smooth:
        return img.repeat(scale, axis=0).repeat(scale, axis=1)
    from skimage.transform import resize

    out = resize(img, (img.shape[0] * scale, img.shape[1] * scale), order=3, anti_aliasing=False,
                 preserve_range=True)
    return np.clip(out, 0, 255).astype(np.uint8)


def _strip(layer: dict, height: int, width: int) -> np.ndarray:
    """A ``height`` x ``width`` strip of a picture tiled edge to edge (every other copy mirrored: no seams)."""
    img = _scaled(_picture(layer["picture"]), layer["scale"], layer["smooth"])
    tile = np.concatenate([img, img[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)
    reps_y, reps_x = -(-height // tile.shape[0]), -(-width // tile.shape[1])
    return np.tile(tile, (reps_y, reps_x, 1))[:height, :width]


def scene_frames(plan: dict, frames: int, width: int = WIDTH, height: int = HEIGHT):
    """Yield the ``frames`` RGB frames (uint8, height x width x 3) of a scene drawn from ``plan``."""
    speed = plan["speed"]
    span = width + speed * frames + 1
    if plan["sky"] == "gradient":
        a, b = (np.array(c, np.float32) for c in plan["sky_colours"])
        t = np.linspace(0, 1, height, dtype=np.float32)[:, None]
        sky = np.broadcast_to((a * (1 - t) + b * t)[:, None, :], (height, width, 3)).astype(np.uint8)
    elif plan["sky"] == "flat":
        sky = np.broadcast_to(np.array(plan["sky_colours"][0], np.uint8), (height, width, 3))
    else:
        sky = _strip(plan["sky_picture"], height, width)
    far_top, far_bottom = int(plan["far_top"] * height), int(plan["far_bottom"] * height)
    ground_top = max(int(plan["ground_top"] * height), far_bottom)
    far = _strip(plan["far"], far_bottom - far_top, span // 2 + width)
    ground = _strip(plan["ground"], height - ground_top, span)
    from skimage.transform import resize

    sprites = []
    for s in plan["sprites"]:
        img = _picture(s["picture"])
        side = min(img.shape[:2])
        y0, x0 = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        n = min(s["size"], height, width)  # a sprite never taller than the scene (small test scenes)
        cut = resize(img[y0:y0 + side, x0:x0 + side], (n, n), order=1, anti_aliasing=True,
                     preserve_range=True).astype(np.uint8)
        sprites.append((s, cut))
    hud = None
    if plan["hud"]:
        text = _picture("text")
        hud = text[: max(0, min(60, height - 16)), : max(0, min(360, width - 16))]  # clipped to the scene
    gain, levels = plan["brightness"], plan["levels"]
    weather = plan["weather"]
    drops = _weather_pixels(weather, frames, width, height)
    tint = np.array((200, 210, 230) if weather["kind"] == "rain" else (245, 248, 255), np.float32)
    for f in range(frames):
        frame = np.array(sky, dtype=np.uint8, copy=True)
        off = (speed * f) // 2
        frame[far_top:far_bottom] = far[:, off:off + width]
        off = speed * f
        frame[ground_top:] = ground[:, off:off + width]
        for s, cut in sprites:
            n = cut.shape[0]
            y = int(s["y"] * (height - n) + s["vy"] * f) % max(1, height - n)
            x = int(s["x"] * (width + n) + s["vx"] * f) % (width + n) - n
            x0, x1 = max(x, 0), min(x + n, width)
            if x1 > x0:
                frame[y:y + n, x0:x1] = cut[:, x0 - x:x1 - x]
        if hud is not None:
            frame[16:16 + hud.shape[0], 16:16 + hud.shape[1]] = hud
        if drops is not None:
            ys, xs = next(drops)
            a = weather["alpha"]
            frame[ys, xs] = (frame[ys, xs] * (1 - a) + tint * a).astype(np.uint8)
        out = frame.astype(np.float32) * gain
        if levels:
            step = 256 / levels
            out = (np.floor(out / step) + 0.5) * step
        yield np.clip(out, 0, 255).astype(np.uint8)


def _write_scene(plan: dict, seconds: float, dest: Path, size: tuple[int, int]) -> None:
    """Write a scene as lossless H.264 (``seconds`` + 1 s at 30 frames/s, ``size`` = (width, height)) to ``dest``."""
    args = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{size[0]}x{size[1]}", "-r", str(FPS), "-i", "-", "-an", "-c:v", "libx264", "-qp", "0",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "matroska", str(dest)]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:  # closes the pipes
        try:
            for frame in scene_frames(plan, int(round((seconds + 1) * FPS)), *size):
                proc.stdin.write(frame.tobytes())
            proc.stdin.close()
        except BrokenPipeError:  # ffmpeg stopped early: its message below says why
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()  # what it could not take is dropped (the file closes even so)
        except BaseException:  # a frame that could not be drawn: stop ffmpeg before it writes what it was given
            proc.kill()
            proc.wait()
            raise
        err = proc.stderr.read().decode(errors="replace").strip()
    if proc.wait() != 0:
        raise GameQAError(dest, f"ffmpeg could not write the scene: {err.splitlines()[-1] if err else 'no message'}")


def synth_sources(out_root: str | os.PathLike, count: int, seconds: float, *, seed: int = 0,
                  size: tuple[int, int] = (WIDTH, HEIGHT), log: Callable[[str], None] = print) -> list[Path]:
    """Write scenes 0..count-1 into ``out_root/sources`` as ``synthetic--scene-NNN--00.mkv`` (kept if already
    there; a scene is written to a temporary name first, ``write_via_temp``: no half-written source is left)."""
    if count < 1:
        raise ConfigError(None, f"at least one scene, not {count}")
    out_dir = Path(out_root) / "sources"
    make_folder(out_dir, "the sources folder")
    paths = []
    for i in range(count):
        dest = out_dir / f"{SYNTH_GAME}--scene-{i:03d}--00.mkv"
        paths.append(dest)
        if dest.is_file():
            continue
        plan = scene_plan(i, seed)
        write_via_temp(dest, lambda tmp: _write_scene(plan, seconds, Path(tmp), size))
        log(f"{dest.name}: {plan['sky']} sky, far {plan['far']['picture']}, ground {plan['ground']['picture']}, "
            f"{len(plan['sprites'])} sprites, speed {plan['speed']}, brightness {plan['brightness']:g}"
            + (f", {plan['levels']} levels" if plan["levels"] else "")
            + (f", {plan['weather']['kind']}" if plan["weather"]["kind"] != "none" else ""))
    return paths


def synth_corpus(out_root: str | os.PathLike, ladder: Ladder, count: int, *, seed: int = 0, workers: int = 2,
                 size: tuple[int, int] = (WIDTH, HEIGHT), log: Callable[[str], None] = print,
                 progress: Optional[Callable[[int, int], None]] = None) -> tuple[Path, list[dict], list[str]]:
    """``count`` scenes built through ``ladder`` in ``out_root`` (resumable). Returns (the manifest written, its
    rows, failures); every row is in the train split and the group ``synth``."""
    out_root = Path(out_root)
    synth_sources(out_root, count, ladder.seconds, seed=seed, size=size, log=log)
    rows, failures = build_corpus(out_root, ladder, workers=workers, natural=False, warn=log, progress=progress)
    for r in rows:
        r["split"], r["group"] = "train", SYNTH_GROUP
    return write_manifest(rows, out_root / "manifests" / "corpus.csv"), rows, failures
