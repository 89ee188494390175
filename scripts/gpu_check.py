"""Device check: the ERAQUE trainer and distiller on a CUDA GPU.

Run where a CUDA device is, from the repository root, with gameqa's dependencies importable (PyAV, pydantic,
typer, torch, onnxruntime):

    PYTHONPATH=src python3 scripts/gpu_check.py OUTDIR

It makes a tiny real corpus with PyAV (moving test patterns: lossless FFV1 sources, x264 encodes at two qualities
and at half size), then on the GPU: trains ERAQUE (tiny backbone, EfficientNet-Lite0 and the space-to-depth
MobileNetV2, random weights), stops and resumes a run against a straight one, distils a student from the trained
teacher (output, feature and unlabelled terms on), evaluates a checkpoint, exports it to ONNX and compares the ONNX
scores on the CPU with the checkpoint's; then times a training step of the shipped teacher and student configs
and the space-to-depth student (synthetic crops, fp32, channels-last) on the GPU. Prints one line per check and
the timing table, writes OUTDIR/gpu_check.json, and exits 1 if a check failed. The CPU side of the same checks
is the test suite (tests/test_eraque.py, tests/test_distill.py, tests/test_mobilenet.py); the CPU step times come
from ``gameqa bench train``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import av
import numpy as np
import torch

from gameqa.data.manifest import write_manifest
from gameqa.train.config import apply_overrides, build_config, load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tinycorpus import ENCODES, SPLITS, manifest_row, tiny_tree  # noqa: E402  (the tests' tiny corpus and config)

DEVICE = "cuda"  # --device cpu: a dry run of the script itself on a machine without a GPU


def pattern(k: int, t: int, w: int = 128, h: int = 96) -> np.ndarray:
    """Frame ``t`` of moving test pattern ``k`` (RGB uint8): sinusoid gratings, a moving square, seeded noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = 0.05 + 0.04 * k
    rgb = np.stack([np.sin(f * xx + 0.3 * t + k), np.cos(f * yy - 0.2 * t), np.sin(f * (xx + yy) * 0.5 + 0.1 * k * t)],
                   axis=-1)
    img = (rgb * 0.5 + 0.5) * 200
    x0 = (7 * t + 11 * k) % (w - 24)
    img[20:44, x0:x0 + 24] = (255, 255 - 30 * k, 40)
    img += np.random.default_rng(100 * k + t).normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(path: Path, frames: list[np.ndarray], codec: str, pix_fmt: str, options: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = options
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def make_corpus(root: Path) -> Path:
    """Six sources of two "games", three encodes each (tests/tinycorpus.py, the tests' corpus, encoded with PyAV)."""
    rows = []
    for k in range(len(SPLITS)):
        game = "game_a" if k % 2 == 0 else "game_b"
        frames = [pattern(k, t) for t in range(10)]
        src = root / "sources" / game / f"src{k}.mkv"
        encode(src, frames, "ffv1", "yuv444p", {})
        for enc in ENCODES:
            name, w, _h, crf, _mos = enc
            clip = root / "clips" / f"src{k}" / f"{name}.mp4"
            scaled = frames if w == 128 else [f[::2, ::2].copy() for f in frames]
            encode(clip, scaled, "libx264", "yuv420p", {"crf": str(crf), "preset": "veryfast"})
            rows.append(manifest_row(root, k, game, enc, clip, src))
    write_manifest(rows, root / "manifests" / "corpus.csv")
    return root


def tiny(corpus: Path, work: Path, *overrides: str):
    tree = tiny_tree(corpus, work, device=DEVICE)
    tree["name"] = "gpu-check"
    return build_config(apply_overrides(tree, list(overrides)))


def quiet(_message: str) -> None:
    pass


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def time_training_step(config: str, steps: int = 20) -> dict:
    """Median seconds of a training step of ``config`` (random weights, synthetic crops) on the GPU, fp32."""
    from gameqa.train.trainer import _synthetic_run, _timed_step

    cfg = load_config(config, ["model.pretrained=false"])
    model, optimizer, x = _synthetic_run(cfg)
    model, x = model.to(DEVICE), x.to(DEVICE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    y = torch.linspace(1.0, 5.0, cfg.train.batch_size, device=DEVICE)
    times = []
    for i in range(steps + 3):
        sync()
        t0 = time.perf_counter()
        _timed_step(cfg, model, optimizer, x, y)
        sync()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"config": config, "backbone": cfg.model.backbone, "crop": cfg.input.crop_size, "batch": cfg.train.batch_size,
            "step_s_median": times[len(times) // 2], "step_s_min": times[0]}


def main(out: Path) -> int:
    from gameqa.export.onnx import export_onnx
    from gameqa.train.distill import DistillTrainer
    from gameqa.train.trainer import Trainer

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gameqa-gpu-check-"))  # corpus, frames and runs; only the report goes to OUTDIR
    report: dict = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu", "checks": {}, "timing": []}
    failed = []

    def check(name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            detail = fn()
            ok = True
        except Exception as exc:  # a device check reports every failure and goes on
            detail = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            ok = False
            failed.append(name)
        report["checks"][name] = {"ok": ok, "detail": detail, "seconds": round(time.perf_counter() - t0, 2)}
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)

    corpus = make_corpus(work / "corpus")
    state: dict = {}

    def train_straight():
        r = Trainer(tiny(corpus, work / "a", "train.max_steps=4"), log=quiet).fit()
        assert next(r.run_dir.glob("best.pt"))
        state["teacher"] = r
        return {"steps": r.steps, "best_srocc": r.best_srocc, "digest": r.digest[:12]}

    def train_again():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = Trainer(tiny(corpus, work / "a2", "train.max_steps=4"), log=quiet).fit()
        flagged = sorted({str(w.message).split(" does not have")[0] for w in caught
                          if "deterministic" in str(w.message)})
        assert r.digest == state["teacher"].digest, "a second seeded run ended with other weights"
        return {"same_weights": True, "ops_without_deterministic_kernel": flagged}

    def train_resumed():
        Trainer(tiny(corpus, work / "b", "train.max_steps=2"), log=quiet).fit()
        r = Trainer(tiny(corpus, work / "b", "train.max_steps=4"), log=quiet).fit()
        assert r.digest == state["teacher"].digest, "the resumed run ended with other weights than the straight one"
        return {"steps": r.steps, "same_weights_as_straight": True}

    def train_lite0():
        r = Trainer(tiny(corpus, work / "lite0", "train.max_steps=4", 'model.backbone="efficientnet-lite0"',
                         "model.head_hidden=64"), log=quiet).fit()
        return {"steps": r.steps, "last_val": {k: round(v, 4) for k, v in r.last_val.items()
                                               if isinstance(v, float)}}

    def distill():
        teacher = state["teacher"].run_dir / "best.pt"
        more = [f'distill.teacher="{teacher}"', "name=student", "train.max_steps=4", "distill.unlabelled_clips=2",
                'distill.unlabelled_sample="uniform:2"', "distill.unlabelled_per_batch=2"]
        r = DistillTrainer(tiny(corpus, work / "s", *more), log=quiet).fit()
        DistillTrainer(tiny(corpus, work / "s2", *more[:2], "train.max_steps=2", *more[3:]), log=quiet).fit()
        r2 = DistillTrainer(tiny(corpus, work / "s2", *more), log=quiet).fit()
        state["student"] = r
        metrics = (r.run_dir / "metrics.csv").read_text().splitlines()
        assert r2.digest == r.digest, "the resumed distillation ended with other weights than the straight one"
        return {"steps": r.steps, "metric_rows": len(metrics) - 1, "resumed_same_weights": True}

    def train_s2d():
        r = Trainer(tiny(corpus, work / "s2d", "train.max_steps=4", 'model.backbone="mobilenetv2-0.5-s2d"',
                         "input.crop_size=64"), log=quiet).fit()
        assert r.digest, "no weights"
        return {"steps": r.steps, "best_srocc": r.best_srocc}

    def evaluate():
        ckpt = state["teacher"].run_dir / "best.pt"
        cmd = [sys.executable, "-m", "gameqa.train.cli", "eval", "--model", str(ckpt), "--manifest",
               str(corpus / "manifests" / "corpus.csv"), "--split", "test", "--bootstrap", "0", "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        doc = json.loads(done.stdout)
        return {"clips": doc["clips"], **{r["metric"]: r["value"] for r in doc["table"] if not r["mapped"]}}

    def export():
        rep = export_onnx(state["student"].run_dir / "best.pt", work / "model", name="gpu-check-student")
        assert rep.max_abs_diff < 1e-3, rep.max_abs_diff
        return {"max_abs_diff_onnx_vs_checkpoint": rep.max_abs_diff}

    check("train, tiny backbone, 4 steps on the device", train_straight)
    if "teacher" in state:
        check("a second seeded run: the same weights", train_again)
        check("stop at 2 steps and resume to 4: the same weights", train_resumed)
        check("distil a student on the device (output, feature, unlabelled terms), resume", distill)
        check("gameqa eval of the device-trained checkpoint", evaluate)
    check("train, EfficientNet-Lite0 backbone, 4 steps on the device", train_lite0)
    check("train, MobileNetV2 space-to-depth backbone, 4 steps on the device", train_s2d)
    if "student" in state:
        check("export the device-distilled student to ONNX, scores vs checkpoint", export)

    for config in ("configs/eraque/default.toml", "configs/eraque/student.toml", "configs/distill/student-s2d.toml"):
        try:
            t = time_training_step(config)
            report["timing"].append(t)
            print(f"step  {t['backbone']:<20} batch {t['batch']:>3} of {t['crop']} px: "
                  f"{t['step_s_median'] * 1000:.1f} ms median ({t['step_s_min'] * 1000:.1f} min)", flush=True)
        except Exception as exc:
            traceback.print_exc()
            failed.append(f"timing {config}")
            report["timing"].append({"config": config, "error": f"{type(exc).__name__}: {exc}"})

    report["failed"] = failed
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"{len(report['checks']) - len([f for f in failed if not f.startswith('timing')])}/{len(report['checks'])} "
          f"checks passed; {out / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[1:] == ["--device", "cpu"]:
        DEVICE, args = "cpu", args[:1]
    if len(args) != 1 or (DEVICE == "cuda" and not torch.cuda.is_available()):
        sys.exit("usage: PYTHONPATH=src python3 scripts/gpu_check.py OUTDIR [--device cpu]  (needs a CUDA device "
                 "unless --device cpu)")
    sys.exit(main(Path(args[0])))
