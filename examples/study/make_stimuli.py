"""Make the example study's stimuli from the gameplay clip bundled with gameqa.

Two source contents (the clip's first and second two seconds) at four qualities each,
VP9 in WebM at 640x360 (plays in every current browser), plus two training clips at the
ends of the quality range. Run: ``python examples/study/make_stimuli.py`` (needs ffmpeg);
the files go to examples/study/stimuli/ (not committed).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
CONTENTS = {"opening": 0.0, "battle": 2.0}        # content id -> start second in the clip
QUALITIES = {"q1": 4, "q2": 10, "q3": 45, "q4": 63}  # stimulus suffix -> VP9 CRF (lower is better)


def encode(source: Path, start: float, crf: int, out: Path, seconds: float = 2.0) -> None:
    """Cut ``seconds`` from ``start`` and encode them as VP9 at ``crf`` (argument list, no shell)."""
    command = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-ss", f"{start}", "-t", f"{seconds}", "-i", str(source),
               "-vf", "scale=640:360", "-an", "-c:v", "libvpx-vp9", "-b:v", "0", "-crf", str(crf),
               "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1", str(out)]
    subprocess.run(command, check=True)


def main(out_dir: Path = HERE / "stimuli") -> int:
    source = Path(str(resources.files("gameqa") / "assets" / "wesnoth_720p30.mp4"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for content, start in CONTENTS.items():
        for suffix, crf in QUALITIES.items():
            encode(source, start, crf, out_dir / f"{content}_{suffix}.webm")
    encode(source, 1.0, 4, out_dir / "train_best.webm", seconds=1.5)
    encode(source, 1.0, 63, out_dir / "train_worst.webm", seconds=1.5)
    print(f"stimuli written to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "stimuli"))
