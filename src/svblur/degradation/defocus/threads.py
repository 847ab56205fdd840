"""The renderer's threads: a task pool whose waiting caller works too, and the
per-thread settings (flush-denormal, one OpenMP/MKL intra-op thread) each rendering
thread runs with.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


class _Task:
    """A queued call; :meth:`result` waits for it and re-raises its error."""

    __slots__ = ("args", "done", "error", "fn", "value")

    def __init__(self, fn: Any, args: tuple) -> None:
        self.fn, self.args = fn, args
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.value = self.fn(*self.args)
        except BaseException as error:  # re-raised by result() on the waiting thread
            self.error = error
        finally:
            self.done.set()

    def result(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class _Pool:
    """First-in first-out tasks run by ``helpers`` threads and by the waiting caller.

    :meth:`wait` runs queued tasks on the calling thread until the awaited one is
    done, so ``threads`` workers need only ``threads - 1`` helper threads and no
    core sits idle (nor is oversubscribed) while the compositing thread waits.
    A task may wait (plainly) for tasks queued before it: those have started.
    """

    def __init__(self, helpers: int, single_intra_op: bool = True) -> None:
        """``single_intra_op``: helper threads run torch ops on one intra-op thread."""
        self.threads = helpers + 1  # the waiting caller included
        self._single_intra_op = single_intra_op
        self._queue: deque[_Task] = deque()
        self._queued = threading.Semaphore(0)
        self._closed = False
        self._helpers = [threading.Thread(target=self._work, daemon=True) for _ in range(helpers)]
        for helper in self._helpers:
            helper.start()

    def submit(self, fn: Any, *args: Any) -> _Task:
        task = _Task(fn, args)
        self._queue.append(task)
        self._queued.release()
        return task

    def _pop(self) -> _Task | None:
        try:
            return self._queue.popleft()
        except IndexError:
            return None

    def _work(self) -> None:
        with _rendering_thread(self._single_intra_op):
            while True:
                self._queued.acquire()
                if self._closed:
                    return
                task = self._pop()
                if task is not None:  # else the caller ran it
                    task.run()

    def wait(self, task: _Task) -> Any:
        while not task.done.is_set():
            other = self._pop()
            if other is None:
                break
            other.run()
        return task.result()

    def cancel(self) -> None:
        """Drop the tasks not yet started."""
        self._queue.clear()

    def shutdown(self) -> None:
        self._closed = True
        self._queue.clear()
        for _ in self._helpers:
            self._queued.release()
        for helper in self._helpers:
            helper.join()


# --------------------------------------------------------------------------- thread state
# Each rendering thread (the caller and the pool's helpers) changes two settings of
# its own and restores them when it is done; no setting of the process changes.
#
# * Flush-denormal (``torch.set_flush_denormal``) sets the FTZ and DAZ bits of the
#   calling thread's MXCSR register, so it is per thread: long products of
#   ``(1 - mask)`` and the Gaussian tails underflow to subnormal floats, ~100x
#   slower on x86, and are flushed to zero while rendering.
# * One intra-op thread. Torch's intra-op pool would run the hundreds of small
#   per-layer ops on OpenMP workers, which keep the floating-point mode they were
#   started with, unflushed (a 15x slow-down measured at 480x640), and which
#   oversubscribe the cores the pool's helpers use.
#   ``torch.set_num_threads`` is process-wide (it also seeds every thread that
#   first uses torch later, resizes the pthreadpool and clears oneDNN's cache), so
#   the renderer calls the per-thread setters underneath it instead: OpenMP's
#   ``omp_set_num_threads`` (the calling thread's ``nthreads`` ICV, which is what
#   ``torch.get_num_threads`` reads) and MKL's ``mkl_set_num_threads_local``, as
#   :mod:`svblur.degradation._harmonic` does for SciPy's OpenBLAS.

#: The smallest subnormal double; times 1.0 it is 0.0 exactly when denormals are flushed.
_SUBNORMAL: float = struct.unpack("<d", struct.pack("<Q", 1))[0]


def _denormals_flushed() -> bool:
    """Whether the calling thread flushes denormals (``torch.set_flush_denormal``)."""
    return _SUBNORMAL * 1.0 == 0.0


@dataclass(frozen=True)
class _IntraOpSetters:
    """Per-thread setters of torch's intra-op parallelism."""

    omp: Callable[[int], None]  # omp_set_num_threads of the OpenMP runtime torch uses
    mkl_local: Callable[[int], int]  # mkl_set_num_threads_local: the previous value (0: unset)


def _find_intra_op_setters() -> _IntraOpSetters | None:
    """Look the setters up in the loaded ``libtorch_cpu`` (and so in its OpenMP runtime)."""
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is None:  # pragma: no cover - Windows
        return None
    for path in sorted((Path(torch.__file__).parent / "lib").glob("libtorch_cpu.*")):
        try:
            library = ctypes.CDLL(str(path), mode=no_load | os.RTLD_LAZY)
            omp = library.omp_set_num_threads
        except (OSError, AttributeError):
            continue
        omp.argtypes, omp.restype = [ctypes.c_int], None
        # MKL's by-value C entry point (the lower-case name is its Fortran one).
        mkl_local = getattr(library, "MKL_Set_Num_Threads_Local", None)
        if mkl_local is None:  # pragma: no cover - torch without MKL
            return _IntraOpSetters(omp, lambda count: 0)
        mkl_local.argtypes, mkl_local.restype = [ctypes.c_int], ctypes.c_int
        return _IntraOpSetters(omp, mkl_local)
    return None  # pragma: no cover - a torch without a loaded libtorch_cpu


@functools.cache
def _intra_op_setters() -> _IntraOpSetters | None:
    """The setters, if they do change what torch's intra-op pool uses on this thread.

    ``None`` (Windows, a torch without OpenMP, an unusual build): the renderer then
    leaves the intra-op pool alone, which gives the same result, more slowly.
    """
    setters = _find_intra_op_setters()
    if setters is None:
        return None
    previous = torch.get_num_threads()  # also torch's lazy per-thread initialisation
    setters.omp(1)
    works = torch.get_num_threads() == 1
    setters.omp(previous)
    return setters if works else None


@contextmanager
def _rendering_thread(single_intra_op: bool) -> Iterator[None]:
    """Flush denormals and (``single_intra_op``) use one intra-op thread, on this thread only.

    Both settings are restored on exit, to what this thread had before.
    """
    flushed = _denormals_flushed()
    torch.set_flush_denormal(True)
    setters = _intra_op_setters() if single_intra_op else None
    if setters is not None:
        # First, so that torch's lazy per-thread initialisation cannot undo the change.
        threads = torch.get_num_threads()
        mkl_local = setters.mkl_local(1)
        setters.omp(1)
    try:
        yield
    finally:
        if setters is not None:
            setters.omp(threads)
            setters.mkl_local(mkl_local)
        torch.set_flush_denormal(flushed)
