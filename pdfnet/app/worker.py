"""One thread per device that runs every cutout of ``pdfnet serve``, page and API alike, one at a time and in the
order they came.

Why one dedicated thread rather than a lock around work run on the web server's threads:

- nothing runs that nobody waits for: a job whose client cancels or goes away is taken out of the queue at once
  (its upload with it) and never starts; a running job stops at its next step (:meth:`Job.check`);
- at most one image per device is decoded and held at a time: jobs wait as uploaded files, and only this thread
  decodes them;
- memory stays flat under concurrent load: glibc gives each thread that allocates its own malloc arena and keeps
  what is freed there, so decoding and computing on whichever of the web server's threads picked a request up
  left several image-sized arenas behind (the server grew with every batch of concurrent requests);
- a clean stop: the thread is not a daemon and is joined before the interpreter exits. A daemon thread inside
  torch when Python 3.11 finalises is ended with ``pthread_exit``, whose forced unwinding through torch's C++
  frames calls ``std::terminate`` ("terminate called without an active exception", exit status 134).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import PDFNetError
from ..memory import release_freed_memory

log = logging.getLogger("pdfnet.serve")


class DroppedError(Exception):
    """The job was dropped before it finished: its client cancelled or went away, or the server is stopping."""


class QueueFullError(Exception):
    """The queue holds as many jobs as it may; ``retry_after`` is a guess, in seconds, of when one will be free."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(f"the server is busy: {waiting} cutouts are waiting; try again in {retry_after} s")
        self.waiting, self.retry_after = waiting, retry_after


class Job:
    """One piece of work for a :class:`DeviceWorker`: ``work(job)`` runs on the worker's thread and calls
    :meth:`check` between its steps, so that a job nobody waits for any more stops there."""

    def __init__(
        self, worker: DeviceWorker, work: Callable[[Job], Any], label: str, wanted: Callable[[], bool] = lambda: True
    ) -> None:
        self.label, self._wanted = label, wanted
        self._worker, self._work = worker, work
        self._cancelled = threading.Event()
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Nobody waits for this job any more: out of the queue if it waits there, else it stops at its next
        :meth:`check`. Does nothing once it has finished."""
        self._cancelled.set()
        self._worker._withdraw(self)

    def check(self) -> None:
        """Raise :class:`DroppedError` if the job was cancelled, or ``wanted()`` says nobody waits for it any more
        (called before the job starts, and by the work between its steps)."""
        if self._cancelled.is_set() or not self._wanted():
            self._cancelled.set()
            raise DroppedError("cancelled")

    def position(self) -> int:
        """How many jobs run or wait before this one (0: it is running or finished)."""
        return self._worker._position(self)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job; its result, or the exception it raised (:class:`DroppedError` if it was dropped).

        Raises:
            TimeoutError: not finished within ``timeout`` seconds.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.label} did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result

    async def wait(self) -> Any:
        """As :meth:`result`, for a coroutine; if the coroutine is cancelled (its client went away), so is the job."""
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))

        self._on_done(wake)
        try:
            await finished
        except asyncio.CancelledError:
            self.cancel()
            raise
        return self.result(0)

    def _on_done(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def _finish(self, result: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._result, self._error = result, error
            self._work = None  # type: ignore[assignment]  # drop what the work holds (the upload) now
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


class DeviceWorker:
    """Runs :class:`Job` s one at a time, in the order they came, on one thread of its own.

    Args:
        name: names the thread, e.g. the device.
        max_waiting: more jobs than this waiting is refused with :class:`QueueFullError`.
    """

    def __init__(self, name: str, max_waiting: int) -> None:
        self.name, self.max_waiting = name, max_waiting
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._stopping = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"pdfnet-{name}", daemon=False)
        self.done = self.dropped = self.failed = 0
        self._seconds = 0.0  # of the jobs done, for Retry-After

    def start(self) -> DeviceWorker:
        self._thread.start()
        return self

    @property
    def stopping(self) -> bool:
        return self._stopping

    def submit(self, work: Callable[[Job], Any], label: str, wanted: Callable[[], bool] = lambda: True) -> Job:
        """Queue ``work`` (run as ``work(job)``); returns its :class:`Job`. ``wanted()``, asked before the job starts
        and at each of its steps, says whether its client still waits (False: the job is dropped there).

        Raises:
            QueueFullError: ``max_waiting`` jobs wait already.
            DroppedError: the server is stopping.
        """
        job = Job(self, work, label, wanted)
        with self._wake:
            if self._stopping:
                raise DroppedError("the server is stopping")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFullError(len(self._waiting), self._retry_after())
            self._waiting.append(job)
            self._wake.notify()
        return job

    def queue_length(self) -> int:
        """Jobs waiting, plus the one running."""
        with self._wake:
            return len(self._waiting) + (self._running is not None)

    def counts(self) -> dict[str, int]:
        """``{"running": 0 or 1, "waiting": n}``."""
        with self._wake:
            return {"running": int(self._running is not None), "waiting": len(self._waiting)}

    def stop(self, wait: bool = True) -> None:
        """Take no more jobs, drop the waiting ones and stop the running one at its next step; with ``wait``,
        join the thread. Safe to call more than once, and from a signal handler with ``wait=False``."""
        with self._wake:
            self._stopping = True
            dropped, self._waiting = list(self._waiting), collections.deque()
            if self._running is not None:
                self._running._cancelled.set()
            self._wake.notify()
        for job in dropped:
            self.dropped += 1
            job._finish(error=DroppedError("the server is stopping"))
        if wait and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _retry_after(self) -> int:
        average = self._seconds / self.done if self.done else 1.0
        return max(1, math.ceil(average * (len(self._waiting) + 1)))

    def _withdraw(self, job: Job) -> None:
        with self._wake:
            try:
                self._waiting.remove(job)
            except ValueError:
                return  # running or finished: it stops at its next check
        self.dropped += 1
        log.info("dropped %s: cancelled before it started", job.label)
        job._finish(error=DroppedError("cancelled"))

    def _position(self, job: Job) -> int:
        with self._wake:
            try:
                return self._waiting.index(job) + 1 + (self._running is not None)
            except ValueError:
                return 0

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._stopping:
                    self._wake.wait()
                if not self._waiting:
                    return
                self._running = self._waiting.popleft()
            self._run_one(self._running)
            with self._wake:
                self._running = None
            # what the job freed goes back to the system rather than staying with malloc for the next image: the
            # server returns to its idle size between jobs
            release_freed_memory()

    def _run_one(self, job: Job) -> None:
        start = time.perf_counter()
        try:
            job.check()
            result = job._work(job)
        except DroppedError as e:
            self.dropped += 1
            log.info("dropped %s: %s", job.label, e)
            job._finish(error=e)
        except Exception as e:  # the job's own failure, handed to whoever waits for it
            self.failed += 1
            if not isinstance(e, PDFNetError):  # a bug, or out of memory: the traceback goes to the log
                log.error("%s failed", job.label, exc_info=e)
            e.__context__ = e.__cause__ = None
            job._finish(error=e.with_traceback(None))  # its frames would keep the decoded image alive
        else:
            self.done += 1
            self._seconds += time.perf_counter() - start
            job._finish(result)
