"""Service metrics in the Prometheus text format (version 0.0.4), without a client library."""
from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Callable, Iterable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.labels = name, help_text, labels
        self._values: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[label_values] = self._values.get(label_values, 0.0) + amount

    def value(self, *label_values: str) -> float:
        return self._values.get(label_values, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        with self._lock:
            items = sorted(self._values.items())
        for key, val in items:
            yield f"{self.name}{_labels(self.labels, key)} {_num(val)}"


class Histogram:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = (), buckets=LATENCY_BUCKETS):
        self.name, self.help, self.labels, self.buckets = name, help_text, labels, tuple(buckets)
        self._series: dict[tuple, list] = {}  # key -> [bucket counts..., sum, count]
        self._lock = threading.Lock()

    def observe(self, value: float, *label_values: str) -> None:
        with self._lock:
            s = self._series.setdefault(label_values, [0] * len(self.buckets) + [0.0, 0])
            i = bisect_left(self.buckets, value)
            if i < len(self.buckets):
                s[i] += 1
            s[-2] += value
            s[-1] += 1

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for key, s in items:
            running = 0
            for bound, n in zip(self.buckets, s):
                running += n
                yield f"{self.name}_bucket{_labels(self.labels + ('le',), key + (_num(bound),))} {running}"
            yield f"{self.name}_bucket{_labels(self.labels + ('le',), key + ('+Inf',))} {s[-1]}"
            yield f"{self.name}_sum{_labels(self.labels, key)} {_num(s[-2])}"
            yield f"{self.name}_count{_labels(self.labels, key)} {s[-1]}"


class Gauge:
    """A value read when scraped."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]):
        self.name, self.help, self.read = name, help_text, read

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        yield f"{self.name} {_num(self.read())}"


class Metrics:
    """All the service's metrics."""

    def __init__(self):
        self.requests = Counter("gameqa_http_requests_total", "HTTP requests by method, route and status.",
                                ("method", "route", "status"))
        self.request_seconds = Histogram("gameqa_http_request_duration_seconds",
                                         "Time to answer an HTTP request.", ("route",))
        self.jobs = Counter("gameqa_jobs_total", "Jobs that ended, by final status.", ("status",))
        self.job_seconds = Histogram("gameqa_job_latency_seconds",
                                     "Time from job submission to its end (queueing + scoring).")
        self.frames = Counter("gameqa_frames_scored_total", "Frames scored by the model.")
        self.rejected = Counter("gameqa_jobs_rejected_total", "Job submissions refused, by reason.", ("reason",))
        self.gauges: list[Gauge] = []

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges.append(Gauge(name, help_text, read))

    def render(self) -> str:
        parts = [self.requests, self.request_seconds, self.jobs, self.job_seconds, self.frames, self.rejected,
                 *self.gauges]
        return "\n".join(line for p in parts for line in p.render()) + "\n"


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    text = ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values))
    return "{" + text + "}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))
