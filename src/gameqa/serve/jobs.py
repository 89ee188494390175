"""The job runner: a bounded queue in front of a fixed pool of worker threads, each with its own
loaded models. Every state change goes to the ``JobStore`` first, so a restart finds each job where
it was and resumes it or fails it, as the operator chose."""
from __future__ import annotations

import heapq
import io
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from gameqa.errors import GameQAError
from gameqa.serve.metrics import Metrics
from gameqa.serve.store import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, JobStore

log = logging.getLogger("gameqa.serve")

THUMB_WIDTH = 320
WORST_FRAMES = 3


class QueueFull(Exception):
    """More jobs are queued than the service allows."""


@dataclass
class Progress:
    frames_done: int = 0
    frames_expected: Optional[int] = None

    @property
    def fraction(self) -> Optional[float]:
        if not self.frames_expected:
            return None
        return min(1.0, self.frames_done / self.frames_expected)


class JobRunner:
    """Runs jobs from the store on ``workers`` threads; at most ``max_queued`` wait at once."""

    def __init__(self, store: JobStore, metrics: Metrics, workers: int = 1, max_queued: int = 32,
                 worst_frames: int = WORST_FRAMES):
        self.store = store
        self.metrics = metrics
        self.workers = max(1, int(workers))
        self.max_queued = max(1, int(max_queued))
        self.worst_frames = worst_frames
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        self._lock = threading.Lock()
        self._waiting: set[str] = set()  # queued ids, in the queue and not cancelled
        self._running: dict[str, Progress] = {}
        self._events: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._local = threading.local()

    # -- life cycle -------------------------------------------------------------------------------
    def start(self, on_restart: str = "resume") -> dict[str, int]:
        """Recover jobs a previous run left unfinished, then start the workers.

        ``on_restart="resume"`` queues them again (when their file is still there); ``"fail"`` marks them
        failed with a message saying why. Returns how many were resumed and failed."""
        resumed = failed = 0
        for job_id in self.store.ids_with_status(RUNNING, QUEUED):
            job = self.store.get(job_id)
            if job is None:
                continue
            if on_restart == "resume" and os.path.isfile(job.media_path):
                self.store.requeue(job_id)
                self._enqueue(job_id)
                resumed += 1
            else:
                reason = ("the service restarted before this job ended (restart policy: fail)"
                          if on_restart != "resume" else "the service restarted and the job's file is gone")
                if self.store.fail(job_id, reason):
                    self._discard_file(job)
                    self.metrics.jobs.inc(FAILED)
                failed += 1
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"gameqa-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if resumed or failed:
            log.info("restart: %d unfinished jobs resumed, %d failed", resumed, failed)
        return {"resumed": resumed, "failed": failed}

    def stop(self, timeout: float = 10.0) -> None:
        """Let running jobs finish (queued ones stay queued in the store for the next start)."""
        with self._lock:
            while True:  # drop queued ids: they stay QUEUED in the store
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._waiting.clear()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    # -- submitting -------------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, job: Job) -> None:
        """Store a new job and queue it; ``QueueFull`` when the queue is at its bound (nothing is stored)."""
        with self._lock:
            if len(self._waiting) >= self.max_queued:
                raise QueueFull(f"{len(self._waiting)} jobs are queued, the most this service takes; retry later")
            self._waiting.add(job.id)
            self._events[job.id] = threading.Event()
        try:
            self.store.add(job)
        except BaseException:
            with self._lock:
                self._waiting.discard(job.id)
                self._events.pop(job.id, None)
            raise
        self._queue.put(job.id)

    def _enqueue(self, job_id: str) -> None:
        with self._lock:
            self._waiting.add(job_id)
            self._events.setdefault(job_id, threading.Event())
        self._queue.put(job_id)

    def cancel(self, job: Job) -> bool:
        """Cancel a queued job; False when it already started or ended."""
        if not self.store.fail(job.id, "cancelled by the client", status=CANCELLED, only_if=(QUEUED,)):
            return False
        with self._lock:
            self._waiting.discard(job.id)
        self.metrics.jobs.inc(CANCELLED)
        self._discard_file(job)
        self._end(job.id)
        return True

    def progress(self, job_id: str) -> Optional[Progress]:
        return self._running.get(job_id)

    def event(self, job_id: str) -> Optional[threading.Event]:
        """Set when the job ends; None when the job is not in flight in this process."""
        return self._events.get(job_id)

    # -- working ----------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                if job_id not in self._waiting:
                    continue  # cancelled while queued
                self._waiting.discard(job_id)
            try:
                self._run(job_id)
            except Exception:  # never let one job kill the worker
                log.exception("job %s: unexpected error", job_id)
                if self.store.fail(job_id, "internal error while scoring (see the service log)"):
                    self.metrics.jobs.inc(FAILED)
            finally:
                self._running.pop(job_id, None)
                self._end(job_id)

    def _run(self, job_id: str) -> None:
        if not self.store.mark_running(job_id):
            return  # cancelled while queued
        job = self.store.get(job_id)
        progress = Progress(frames_expected=_expected_frames(job.media_path, job.sample))
        self._running[job_id] = progress
        try:
            scorer = self._scorer(job.model, job.sample)
            worst = _WorstFrames(self.worst_frames, scorer.card.lower_better)

            def on_batch(frames, scores):
                worst.offer(progress.frames_done, frames, scores)
                progress.frames_done += len(frames)
                self.metrics.frames.inc(amount=len(frames))

            result = scorer.score(job.media_path, on_batch=on_batch)
        except GameQAError as exc:
            message = str(exc).replace(job.media_path, job.filename)
            if self.store.fail(job_id, message):
                self.metrics.jobs.inc(FAILED)
                self._observe_latency(job)
            self._discard_file(job)
            return
        except Exception:
            self._discard_file(job)
            raise
        data = result.model_dump()
        data["path"] = job.filename
        thumbs = worst.thumbnails(result.frame_indices)
        self.store.finish(job_id, data, thumbs)
        self.metrics.jobs.inc(DONE)
        self._observe_latency(job)
        self._discard_file(job)

    def _observe_latency(self, job: Job) -> None:
        self.metrics.job_seconds.observe(max(0.0, time.time() - job.created_at))

    def _scorer(self, model: str, sample: str):
        cache = getattr(self._local, "scorers", None)
        if cache is None:
            cache = self._local.scorers = {}
        key = (model, sample)
        if key not in cache:
            from gameqa.api import load

            if len(cache) >= 8:  # a worker keeps a few models loaded, not every one ever asked for
                cache.pop(next(iter(cache)))
            cache[key] = load(model, sample=sample)
        return cache[key]

    def _discard_file(self, job: Job) -> None:
        if job.source == "upload" and not job.keep_file:
            try:
                os.unlink(job.media_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("job %s: cannot delete upload: %s", job.id, exc)

    def _end(self, job_id: str) -> None:
        event = self._events.pop(job_id, None)
        if event is not None:
            event.set()


class _WorstFrames:
    """Keeps copies of the k worst frames seen so far, to show them next to the result."""

    def __init__(self, k: int, lower_better: bool):
        self.k = k
        self.sign = 1.0 if lower_better else -1.0  # larger badness = worse
        self._heap: list[tuple[float, int, np.ndarray]] = []

    def offer(self, first_ordinal: int, frames, scores) -> None:
        for n, (frame, score) in enumerate(zip(frames, np.asarray(scores, dtype=np.float64))):
            if not math.isfinite(score) or self.k <= 0:
                continue
            item = (self.sign * float(score), -(first_ordinal + n), frame)
            if len(self._heap) < self.k:
                heapq.heappush(self._heap, (item[0], item[1], _small(frame)))
            elif item[:2] > self._heap[0][:2]:
                heapq.heapreplace(self._heap, (item[0], item[1], _small(frame)))

    def thumbnails(self, frame_indices: list[int]) -> dict[int, bytes]:
        from PIL import Image

        out = {}
        for _, neg_ordinal, frame in self._heap:
            ordinal = -neg_ordinal
            if ordinal < len(frame_indices):
                buf = io.BytesIO()
                Image.fromarray(frame).save(buf, format="PNG", optimize=False)
                out[frame_indices[ordinal]] = buf.getvalue()
        return out


def _small(frame: np.ndarray) -> np.ndarray:
    """A copy at most THUMB_WIDTH wide (the model's batch buffers may be reused)."""
    height, width = frame.shape[:2]
    if width <= THUMB_WIDTH:
        return np.array(frame, copy=True)
    from PIL import Image

    new_height = max(1, round(height * THUMB_WIDTH / width))
    return np.asarray(Image.fromarray(frame).resize((THUMB_WIDTH, new_height), Image.BILINEAR))


def _expected_frames(path: str, sample: str) -> Optional[int]:
    """About how many frames the sampling policy takes from this file (for a progress fraction)."""
    try:
        from gameqa.media import SamplePolicy, media_kind, probe_video

        if media_kind(path) == "image":
            return 1
        info = probe_video(path)
        policy = SamplePolicy.parse(sample)
        count = getattr(info, "frame_count", None) or 0
        duration = getattr(info, "duration", None) or 0.0
        if policy.kind == "uniform":
            return policy.count
        if policy.kind == "all":
            return count or None
        if policy.kind == "every":
            return math.ceil(count / policy.every) if count else None
        if policy.kind == "fps":
            return max(1, math.ceil(duration * float(policy.fps))) if duration else None
    except (GameQAError, ValueError, AttributeError):
        return None
    return None
