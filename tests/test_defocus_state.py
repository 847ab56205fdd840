"""Rendering leaves no process-wide state behind: intra-op threads and flush-denormal."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from svblur.degradation import defocus, render_defocus

from .test_degradation import defocus_scene

#: Long enough for the barrier below on a busy two-core machine.
TIMEOUT_S = 120.0


def _flushed() -> bool:
    """Whether the calling thread flushes denormals: the smallest float32 subnormal times 1."""
    tiny = np.array([1], dtype=np.uint32).view(np.float32)
    return bool((tiny * np.float32(1.0))[0] == 0.0)


@pytest.fixture
def two_intra_op_threads() -> Iterator[None]:
    """Two intra-op threads (the test session runs with one), restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fresh_thread_threads() -> int:
    """``torch.get_num_threads()`` in a new thread (seeded from the process-wide count)."""
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


@pytest.mark.usefixtures("two_intra_op_threads")
def test_concurrent_renders_leave_other_threads_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    image, depth = defocus_scene(96, 160, seed=5)
    focus = {"a": float(depth[60, 20]), "b": float(depth[2, 2])}
    expected = {k: render_defocus(image, depth, 50.0, z, threads=1) for k, z in focus.items()}
    assert torch.get_num_threads() == 2 and not _flushed()

    # Both renders wait, with their rendering settings in force, until a third thread
    # has started its own torch work; they finish while it goes on.
    rendering = threading.Barrier(3, timeout=TIMEOUT_S)
    third_started = threading.Event()
    run = defocus._Renderer.run

    def held_run(self: defocus._Renderer, pool: defocus._Pool) -> torch.Tensor:
        rendering.wait()
        assert third_started.wait(TIMEOUT_S)
        return run(self, pool)

    monkeypatch.setattr(defocus._Renderer, "run", held_run)
    renders_done = threading.Event()
    results: dict[str, tuple] = {}
    states: dict[str, list[tuple[int, bool]]] = {"a": [], "b": [], "third": []}

    def render(key: str, threads: int, flush: bool) -> None:
        torch.set_flush_denormal(flush)
        states[key].append((torch.get_num_threads(), _flushed()))
        results[key] = render_defocus(image, depth, 50.0, focus[key], threads=threads)
        states[key].append((torch.get_num_threads(), _flushed()))

    def third() -> None:
        rendering.wait()
        lhs = torch.randn(384, 384, generator=torch.Generator().manual_seed(0))
        states["third"].append((torch.get_num_threads(), _flushed()))  # its first torch op
        third_started.set()
        while True:
            finished = renders_done.is_set()
            product = lhs @ lhs  # large enough for the intra-op pool
            assert torch.isfinite(product).all()
            states["third"].append((torch.get_num_threads(), _flushed()))
            if finished:
                return

    threads = [
        threading.Thread(target=render, args=("a", 2, False)),
        threading.Thread(target=render, args=("b", 1, True)),  # flushes before: kept
        threading.Thread(target=third),
    ]
    for thread in threads:
        thread.start()
    for thread in threads[:2]:
        thread.join(TIMEOUT_S)
    renders_done.set()
    threads[2].join(TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads)

    for key in focus:
        np.testing.assert_array_equal(results[key][0], expected[key][0])
        np.testing.assert_array_equal(results[key][1], expected[key][1])
    # The third thread's first torch op came while both renders ran: still 2 threads.
    assert len(states["third"]) >= 2 and set(states["third"]) == {(2, False)}
    assert states["a"] == [(2, False), (2, False)]
    assert states["b"] == [(2, True), (2, True)]
    assert torch.get_num_threads() == 2 and not _flushed()
    assert _fresh_thread_threads() == 2


@pytest.mark.usefixtures("two_intra_op_threads")
@pytest.mark.parametrize("flush", [False, True])
@pytest.mark.parametrize("fails", [False, True])
def test_calling_thread_gets_its_settings_back(
    flush: bool, fails: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, depth = defocus_scene(48, 64)
    if fails:
        plan = defocus._Renderer.plan

        def failing_plan(self, index, region, upcoming):
            if index == 3:
                raise RuntimeError("layer 3 failed")
            return plan(self, index, region, upcoming)

        monkeypatch.setattr(defocus._Renderer, "plan", failing_plan)
    torch.set_flush_denormal(flush)
    try:
        for threads in (1, 2):
            if fails:
                with pytest.raises(RuntimeError, match="layer 3 failed"):
                    render_defocus(image, depth, 50.0, 2500.0, threads=threads)
            else:
                render_defocus(image, depth, 50.0, 2500.0, threads=threads)
            assert torch.get_num_threads() == 2
            assert _flushed() == flush
        assert _fresh_thread_threads() == 2
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.usefixtures("two_intra_op_threads")
def test_rendering_threads_flush_and_use_one_intra_op_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The speed of the renderer rests on these (a 15x slow-down without them).
    if defocus._intra_op_setters() is None:
        pytest.skip("no per-thread intra-op setting on this platform")
    image, depth = defocus_scene(96, 160, seed=5)
    seen: set[tuple[int, bool]] = set()
    plan = defocus._Renderer.plan

    def recording_plan(self, index, region, upcoming):
        seen.add((torch.get_num_threads(), _flushed()))  # in the caller and the helpers
        return plan(self, index, region, upcoming)

    monkeypatch.setattr(defocus._Renderer, "plan", recording_plan)
    render_defocus(image, depth, 50.0, float(depth[60, 20]), threads=3)
    assert seen == {(1, True)}
    assert torch.get_num_threads() == 2 and not _flushed()


@pytest.mark.usefixtures("two_intra_op_threads")
def test_without_per_thread_setters_the_result_is_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image, depth = defocus_scene(48, 64)
    expected = render_defocus(image, depth, 50.0, 2500.0, threads=2)
    # intra-op pool left alone
    monkeypatch.setattr("svblur.degradation.defocus.threads._intra_op_setters", lambda: None)
    blurred, sigma = render_defocus(image, depth, 50.0, 2500.0, threads=2)
    np.testing.assert_array_equal(blurred, expected[0])
    np.testing.assert_array_equal(sigma, expected[1])
    assert torch.get_num_threads() == 2 and not _flushed()
