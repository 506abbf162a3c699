"""The owner loop (quhao/owner.py): what other threads post runs in the owner thread, in
order; timers fire in time order; a post after the loop has ended is dropped, not an error."""

from __future__ import annotations

import threading

from quhao.owner import OwnerLoop


def _running(loop: OwnerLoop) -> threading.Thread:
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    return thread


def test_posts_from_many_threads_run_in_the_owner_thread_in_each_threads_order() -> None:
    loop = OwnerLoop("test")
    thread = _running(loop)
    seen: list[tuple[str, int, threading.Thread]] = []
    done = threading.Event()

    def poster(name: str) -> None:
        for i in range(200):
            loop.post(lambda i=i: seen.append((name, i, threading.current_thread())))

    posters = [threading.Thread(target=poster, args=(f"p{n}",)) for n in range(4)]
    for p in posters:
        p.start()
    for p in posters:
        p.join()
    loop.post(done.set)
    assert done.wait(5)
    loop.stop()
    thread.join(5)
    assert len(seen) == 800 and {owner for _, _, owner in seen} == {thread}
    for n in range(4):
        assert [i for name, i, _ in seen if name == f"p{n}"] == list(range(200))


def test_timers_fire_in_time_order_and_a_cancelled_one_never() -> None:
    loop = OwnerLoop("test")
    fired: list[str] = []
    done = threading.Event()
    loop.call_later(0.03, lambda: fired.append("late"))
    loop.call_later(0.01, lambda: fired.append("early"))
    loop.call_later(0.02, lambda: fired.append("cancelled")).cancel()
    loop.call_later(0.05, done.set)
    thread = _running(loop)
    assert done.wait(5)
    loop.stop()
    thread.join(5)
    assert fired == ["early", "late"]


def test_a_post_after_the_loop_ended_is_dropped_quietly() -> None:
    """A reader thread may post a card as the daemon stops: no error, no write to a
    closed (or reused) descriptor."""
    loop = OwnerLoop("test")
    thread = _running(loop)
    loop.stop()
    thread.join(5)
    assert not thread.is_alive()
    loop.post(lambda: None)  # would raise OSError (EBADF) on the closed eventfd
    loop.stop()
