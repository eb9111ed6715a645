"""The contrastive search in a child process: one search at a time per server, killed past its time limits.

A regular expression cannot be interrupted, and Python's engine holds the interpreter lock while it runs, so
a search in a thread of the server stalls every other request (``/api/health`` waited 7 s on one pattern).
The search runs in a child process instead, which keeps the run's text and models between searches. The
server waits for it without blocking, gives each pattern ``match_s`` seconds to match the run's text and the
whole search ``total_s``, and kills the child when either passes (the next search starts a fresh one).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from training.data.tokenizer import load_tokenized
from training.features.contrast import ContrastConfig, ContrastInputError, CorpusText


class ContrastUnavailable(RuntimeError):
    """The server's run lacks what the search reads (tokens, LM, activations)."""


class ContrastBusy(RuntimeError):
    """Another search is running on this server; the caller should try again shortly."""


class ContrastTimedOut(RuntimeError):
    """The whole search ran past its time limit."""


@dataclass(frozen=True)
class SearchLimits:
    """How long one pattern may take to match the run's text, and how long the whole search may take."""

    match_s: float
    total_s: float


class ContrastWorker:
    """Runs searches one at a time in a child process (spawned on first use) under ``SearchLimits``."""

    def __init__(self, limits: SearchLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def search(self, workdir: Path, a: str, b: str, config: ContrastConfig) -> dict[str, Any]:
        """The search's result as ``ContrastResult.to_json()`` gives it.

        Raises ContrastBusy when a search is running, ContrastInputError (naming the pattern) when a pattern
        is wrong or does not finish matching within ``match_s``, ContrastUnavailable when the run lacks
        something, and ContrastTimedOut past ``total_s``.
        """
        if not self._lock.acquire(blocking=False):
            raise ContrastBusy("another contrast search is running on this server: try again when it has finished")
        try:
            return self._run(str(Path(workdir)), a, b, config.model_dump())
        finally:
            self._lock.release()

    @property
    def running(self) -> bool:
        """Whether the child process is up (it is started on first use and killed past a time limit)."""
        return self._process is not None and self._process.is_alive()

    def prepare(self) -> None:
        """Start the child process now, without waiting for it, so that the next search need not.

        Starting it (Python and torch) takes seconds; the contrast page calls this when it shows its form.
        """
        if self._lock.acquire(blocking=False):
            try:
                self._started()
            finally:
                self._lock.release()

    def _run(self, workdir: str, a: str, b: str, config: dict[str, Any]) -> dict[str, Any]:
        conn = self._started()
        conn.send((workdir, a, b, config))
        started = time.monotonic()
        phase, phase_deadline = "start", float("inf")
        while True:
            deadline = min(started + self.limits.total_s, phase_deadline)
            if not conn.poll(max(deadline - time.monotonic(), 0)):
                self.close()
                if phase in ("a", "b") and deadline == phase_deadline:
                    raise ContrastInputError(
                        phase,
                        f"the pattern did not finish matching the run's text within {self.limits.match_s:g} s "
                        "(setting MONOSEMANTIC_CONTRAST_MATCH_TIMEOUT_S): anchor it to a literal word, and avoid "
                        "long optional repeats like .{0,400} and alternatives that overlap like (a|aa)+",
                    )
                raise ContrastTimedOut(
                    f"the search took longer than {self.limits.total_s:g} s (setting MONOSEMANTIC_CONTRAST_TIMEOUT_S)"
                    ": lower max_positions, or run `monosemantic contrast` on the command line"
                )
            try:
                kind, *payload = conn.recv()
            except (EOFError, OSError):
                self.close()
                raise RuntimeError("the contrast worker process ended during the search") from None
            if kind == "phase":
                phase = payload[0]
                phase_deadline = time.monotonic() + self.limits.match_s if phase in ("a", "b") else float("inf")
            elif kind == "done":
                return payload[0]
            elif kind == "input_error":
                raise ContrastInputError(*payload)
            elif kind == "unavailable":
                raise ContrastUnavailable(payload[0])
            else:
                raise RuntimeError(f"the contrast search failed: {payload[0]}")

    def _started(self) -> Connection:
        if self._process is None or not self._process.is_alive() or self._conn is None:
            self.close()
            # spawn, not fork: the server has threads (and maybe CUDA) that a forked child would inherit broken.
            context = multiprocessing.get_context("spawn")
            parent, child = context.Pipe()
            process = context.Process(target=serve_searches, args=(child,), name="contrast-worker", daemon=True)
            process.start()
            child.close()
            self._process, self._conn = process, parent
        return self._conn

    def close(self) -> None:
        """Kill the child process, if any (a running search ends with it)."""
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
        self._process, self._conn = None, None


@lru_cache(maxsize=2)
def _corpus_text(tokens_dir: str, stamp: float) -> CorpusText:
    return CorpusText.of(load_tokenized(Path(tokens_dir)))


def corpus_text(workdir: Path) -> CorpusText:
    """The run's training text with token offsets, kept between searches until its tokens change."""
    tokens = Path(workdir) / "tokens"
    manifest = tokens / "manifest.json"
    if not manifest.exists():
        raise ContrastUnavailable(f"{workdir} holds no tokenized corpus: build it with `monosemantic run`")
    return _corpus_text(str(tokens.resolve()), manifest.stat().st_mtime)


def serve_searches(conn: Connection) -> None:
    """The child's loop: run each search the server sends, telling it each phase, until the pipe closes."""
    from training.features.contrast import contrast

    while True:
        try:
            workdir, a, b, config = conn.recv()
        except (EOFError, OSError):
            return
        try:
            corpus = corpus_text(Path(workdir))
            result = contrast(
                Path(workdir),
                a,
                b,
                ContrastConfig(**config),
                corpus=corpus,
                progress=False,
                on_phase=lambda phase: conn.send(("phase", phase)),
            )
            conn.send(("done", result.to_json()))
        except ContrastInputError as exc:
            conn.send(("input_error", exc.field, exc.message))
        except ContrastUnavailable as exc:
            conn.send(("unavailable", str(exc)))
        except Exception as exc:  # the server reports it; the child stays up for the next search
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
