"""The fuzz loop: seeded inputs, per-input time limit, memory bound, failing inputs kept.

A target generates an input (bytes, so that it can be saved and replayed) from a seeded
random.Random and runs it. What the target declares as its expected errors is a clean
refusal; any other exception, an input slower than INPUT_TIME_LIMIT or memory growing
past MEMORY_BOUND is a failure, deduplicated by its signature (exception type and the
innermost frame in the code under test).
"""

from __future__ import annotations

import hashlib
import logging
import random
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"
# The bound for one input; CPU time, so a busy shared machine does not trip it.
INPUT_TIME_LIMIT = 0.050
# An input still running after this much CPU time is cut off (exponential backtracking
# would otherwise stall the run for hours): reported as slow.
INPUT_HARD_LIMIT = 2.0
# Peak RSS may grow this much over a whole run (one input, or a leak across many).
MEMORY_BOUND = 256 * 1024 * 1024
# An allocation beyond this much address space fails with MemoryError instead of
# swapping the shared machine to death.
ADDRESS_SPACE_HEADROOM = 2 * 1024 * 1024 * 1024


class InputTimeout(BaseException):
    """Raised by the CPU timer inside an input that ran past INPUT_HARD_LIMIT."""


class Target:
    """One fuzz target; subclasses set `name`, `expected` and implement generate/run."""

    name = ""
    expected: tuple[type[BaseException], ...] = ()

    def generate(self, rng: random.Random) -> bytes:
        raise NotImplementedError

    def run(self, data: bytes) -> None:
        raise NotImplementedError


@dataclass
class Failure:
    target: str
    kind: str  # "exception", "slow" or "memory"
    signature: str
    detail: str
    data: bytes = field(repr=False)
    saved: Path | None = None


@dataclass
class Report:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    slowest: float = 0.0  # CPU seconds of the slowest input
    rss_growth: int = 0  # bytes of peak RSS added during the run
    failures: dict[str, Failure] = field(default_factory=dict)  # signature -> first seen
    counts: dict[str, int] = field(default_factory=dict)  # signature -> how often

    def line(self) -> str:
        rate = self.inputs / self.seconds if self.seconds else 0.0
        return (f"{self.target}: {self.inputs} inputs in {self.seconds:.1f} s "
                f"({rate:.0f}/s), slowest {self.slowest * 1000:.1f} ms, "
                f"peak RSS +{self.rss_growth // 1024} KiB, "
                f"{len(self.failures)} distinct failures")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _where(tb: object) -> str:
    """The innermost frame outside the fuzz harness: where the bug is."""
    frames = traceback.extract_tb(tb)  # type: ignore[arg-type]
    own = [f for f in frames if "/tests/fuzz/" not in f.filename]
    f = (own or frames or [None])[-1]
    if f is None:
        return "?"
    path = f.filename.split("/work/main/")[-1].split("site-packages/")[-1]
    return f"{path}:{f.lineno}"


def _on_timer(signum: int, frame: object) -> None:
    raise InputTimeout()


@contextmanager
def guarded() -> Iterator[None]:
    """Quiet logging, a CPU timer for runaway inputs and an address-space cap, undone after."""
    main = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGPROF, _on_timer) if main else None
    old_limit = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm") as f:
            vsize = int(f.read().split()[0]) * resource.getpagesize()
        cap = vsize + ADDRESS_SPACE_HEADROOM
        if old_limit[0] == resource.RLIM_INFINITY or old_limit[0] > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, old_limit[1]))
    except (OSError, ValueError):
        pass
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        resource.setrlimit(resource.RLIMIT_AS, old_limit)
        if main:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, old_handler)


def run_one(target: Target, data: bytes) -> tuple[float, tuple[str, str, str] | None]:
    """Run one input: (CPU seconds, None) or (CPU seconds, (kind, signature, detail))."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.setitimer(signal.ITIMER_PROF, INPUT_HARD_LIMIT)
    t0 = time.process_time()
    problem = None
    try:
        target.run(data)
    except target.expected:
        pass
    except InputTimeout:
        tb = sys.exc_info()[2]
        problem = ("slow", f"slow at {_where(tb)}",
                   f"cut off after {INPUT_HARD_LIMIT} s CPU at {_where(tb)}")
    except MemoryError:
        tb = sys.exc_info()[2]
        problem = ("memory", f"MemoryError at {_where(tb)}", traceback.format_exc(limit=-8))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # also what gets past `except Exception`: a pyo3 panic
        tb = sys.exc_info()[2]
        problem = ("exception", f"{type(exc).__name__} at {_where(tb)}",
                   traceback.format_exc(limit=-8))
    finally:
        elapsed = time.process_time() - t0
        if main:
            signal.setitimer(signal.ITIMER_PROF, 0)
    return elapsed, problem


def check(target: Target, data: bytes) -> tuple[float, tuple[str, str, str] | None]:
    """run_one, and an input over the time limit is run again: slow only if it is twice."""
    elapsed, problem = run_one(target, data)
    if problem is None and elapsed > INPUT_TIME_LIMIT:
        again, problem = run_one(target, data)
        elapsed = min(elapsed, again)
        if problem is None and elapsed > INPUT_TIME_LIMIT:
            problem = ("slow", f"slow ({target.name})",
                       f"{elapsed * 1000:.0f} ms CPU (limit {INPUT_TIME_LIMIT * 1000:.0f} ms)")
    return elapsed, problem


def save(target: str, data: bytes) -> Path:
    """Keep a failing input as a regression case (named by its content)."""
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    return path


def corpus(target: str) -> list[Path]:
    return sorted((CORPUS / target).glob("*.bin"))


def fuzz(target: Target, seed: int, inputs: int | None = None, seconds: float | None = None,
         keep: bool = False, progress: bool = False) -> Report:
    """Run `inputs` generated inputs (or for `seconds`), or until stopped with Ctrl-C."""
    rng = random.Random(f"{target.name}:{seed}")
    report = Report(target.name)
    initial_rss = start_rss = last_rss = _peak_rss()
    t0 = time.monotonic()
    deadline = t0 + seconds if seconds else None
    with guarded():
        try:
            while inputs is None or report.inputs < inputs:
                if deadline is not None and report.inputs % 64 == 0 \
                        and time.monotonic() > deadline:
                    break
                data = target.generate(rng)
                elapsed, problem = check(target, data)
                report.inputs += 1
                report.slowest = max(report.slowest, elapsed)
                rss = _peak_rss()
                if problem is None and rss - last_rss > MEMORY_BOUND // 2:
                    problem = ("memory", f"memory ({target.name})",
                               f"peak RSS grew {(rss - last_rss) >> 20} MiB on one input")
                last_rss = rss
                if problem is None and rss - start_rss > MEMORY_BOUND:
                    problem = ("memory", f"memory leak ({target.name})",
                               f"peak RSS grew {(rss - start_rss) >> 20} MiB during the run")
                    start_rss = rss  # reported once
                if problem is not None:
                    _record(report, target, problem, data, keep)
                if progress and report.inputs % 100000 == 0:
                    report.seconds = time.monotonic() - t0
                    print(report.line(), file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            pass
    report.seconds = time.monotonic() - t0
    report.rss_growth = _peak_rss() - initial_rss
    return report


def _record(report: Report, target: Target, problem: tuple[str, str, str], data: bytes,
            keep: bool) -> None:
    kind, signature, detail = problem
    report.counts[signature] = report.counts.get(signature, 0) + 1
    if signature in report.failures:
        return
    failure = Failure(target.name, kind, signature, detail, data)
    if keep and not signature.startswith("memory leak"):  # a run's sum, not this input's
        failure.saved = save(target.name, data)
    report.failures[signature] = failure


def replay(target: Target) -> list[Failure]:
    """Every saved regression case of `target` that fails now."""
    out = []
    with guarded():
        for path in corpus(target.name):
            data = path.read_bytes()
            _, problem = check(target, data)
            if problem is not None:
                out.append(Failure(target.name, *problem, data, path))
    return out
