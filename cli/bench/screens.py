"""`quhao bench screens`: (a) a caller key press → the number in the board's DOM in
headless Chromium, beside a bare publish of a window state → the same page through the
same daemon, sample by sample in the same run; (b) 2,000 ticket pages connected at once
(an aiohttp load client in its own process, not 2,000 browsers): a call → the right
page notified, and the daemon's memory and CPU.

(a) Real chain: keypad FIFO → `quhao counter` → hall (SQLite commit) → retained window
state → `quhao screens` → server-sent event → Chromium's DOM. Times are wall-clock
epoch on one machine: Python's before the key record is written, the page's
(`performance.timeOrigin + performance.now()`) when a MutationObserver sees the number.
The baseline publishes a window state for another window straight to the broker: the
broker → daemon → browser part alone.

A subscriber beside the screens daemon (the spy) notes when the counter's request and the
hall's window state pass the broker, which splits the key path into its legs; with one
pass through the broker (the bare publish → the spy) and a bare durable SQLite commit
measured in the same run, it also prints the key path's floor: the bare path plus what a
call must add (one more pass, counter → hall, and the commit on disk before anything is
shown) — with a bare commit of one row, and with the hall's own commit of a call (its
tables and indexes: ~9 pages of WAL).

The bench stays out of the way of what it measures: each key press and each bare publish
comes `SETTLE_S` after the last one's work is done (as in a hall, where calls are seconds
apart: every process of the chain starts from idle, and the hall's rate-limited
hall/state goes out with every call); while the chain runs, the bench process only waits
(for the spy, then in the page for the number), with no browser round trip and the GIL
free for the spy's timestamps.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import multiprocessing.queues
import resource
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.bench.baseline import Run, cpu_seconds, ratio, start_daemons
from quhao import ticketpage
from quhao.broker import Mosquitto, free_port, wait_for_port
from quhao.mqtt import Bus, Message
from quhao.processes import stop
from quhao.rpc import HallClient
from quhao.topics import Topics
from simulators.keys import KeypadFeeder

SITE_ID = "benchscreens"
CALL_INTERVAL_S = 1.0
# Before each key press and each bare publish: the last one's work is done everywhere
# (hall, broker, screens, the page's rendering), and the hall's rate-limited hall/state
# goes out with every call, as in a hall where calls are seconds apart.
SETTLE_S = 0.2
SECRET = b"bench-screens-secret-0123456789"
# What the page notes: each change of a window's number with its time; and a waiter, so
# that the bench waits for a number without polling the browser (polling would load the
# two cores the measured chain runs on).
WATCH = """
var name = arguments[0];
var target = document.querySelector('.cell[data-window="' + arguments[1] + '"] .ticket');
var seen = window[name] = [];
new MutationObserver(function () {
  seen.push([target.textContent, performance.timeOrigin + performance.now()]);
  var waiter = window[name + 'Waiter'];
  if (waiter) waiter();
}).observe(target, {childList: true, characterData: true, subtree: true});
"""
SEEN = """
var name = arguments[0], number = arguments[1], done = arguments[arguments.length - 1];
function look() {
  var hit = window[name].find(function (s) { return s[0].indexOf(number) >= 0; });
  if (hit) { window[name + 'Waiter'] = null; done(hit[1]); }
  return !!hit;
}
if (!look()) window[name + 'Waiter'] = look;
"""


def _site(work: Path) -> Path:
    (work / "site.secret").write_bytes(SECRET)
    windows = "".join(
        f'[[windows]]\nnumber = {n}\nservices = ["{"bench" if n == 1 else "other"}"]\n\n'
        for n in range(1, 11)
    )
    text = f"""
[site]
id = "{SITE_ID}"
name = "基准测试大厅"
hours = ["00:00-24:00"]
secret_file = "site.secret"

[queue]
number_width = 5

[limits]
kiosk = {{ per_s = 100000, burst = 100000 }}
counter = {{ per_s = 100000, burst = 100000 }}

[[services]]
id = "bench"
name = "基准业务"
prefix = "A"
quota = false
id_required = false

[[services]]
id = "other"
name = "其他业务"
prefix = "B"
quota = false
id_required = false

{windows}
[[kiosks]]
name = "kiosk-K1"

[[counters]]
name = "counter-W1"
window = 1
keypad = "events://{work}/keys.fifo"
"""
    path = work / "site.toml"
    path.write_text(text)
    return path


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_screens_bench(
    presses: int = 100, pages: int = 2000, calls: int = 30, out: Path | None = None
) -> dict[str, Any]:
    from screens.shots import chromium

    _raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="quhao-bench-screens-"))
    site = _site(work)
    keys = KeypadFeeder(work / "keys.fifo")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    driver = None
    results: dict[str, Any] = {"benchmark": "screens"}
    with Mosquitto(workdir=work / "broker") as broker:
        try:
            procs = start_daemons(
                site,
                broker.url,
                ["hall", "--state-dir", str(work / "hall")],
                ["counter", "--device", "counter-W1"],
                ["screens", "--port", str(port)],
            )
            wait_for_port(port, timeout=20)
            base = f"http://127.0.0.1:{port}"
            bus = Bus(broker.url, "bench-kiosk")
            kiosk = HallClient(bus, Topics(SITE_ID), "kiosk-K1")
            bus.start()
            for _ in range(presses + 10):
                kiosk.request("issue", {"service": "bench", "person": None})
            driver = chromium()
            driver.get(base + "/board")
            time.sleep(2.0)  # the counter logs in and the board's first snapshot arrives
            results.update(_key_to_dom(driver, keys, broker.url, presses, work))
            results["hall_commit"], results["hall_commit_wal_kb"] = _hall_commits(site, work)
            # The same floor with the hall's own commit of a call in place of the bare one.
            floor = results["floor_p50_ms"] - results["durable_commit"]["p50_ms"]
            floor += results["hall_commit"]["p50_ms"]
            results["floor_hall_commit_p50_ms"] = round(floor, 3)
            results["floor_hall_commit_ratio_p50"] = ratio(
                floor, results["bare_publish_to_dom"]["p50_ms"]
            )
            driver.quit()
            driver = None
            ids = [
                kiosk.request("issue", {"service": "bench", "person": None})["ticket"]["id"]
                for _ in range(pages)
            ]
            results["pages"] = _pages(base, ids, procs[2].pid, kiosk, bus, broker.url, calls)
            bus.stop()
        finally:
            if driver is not None:
                driver.quit()
            for proc in procs:
                stop(proc, 15)
            keys.close()
    shutil.rmtree(work, ignore_errors=True)
    _print(results)
    if out:
        out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def _key_to_dom(
    driver: Any, keys: KeypadFeeder, broker: str, presses: int, work: Path
) -> dict[str, Any]:
    driver.execute_script(WATCH, "seen", 1)
    driver.execute_script(WATCH, "bare", 2)
    driver.set_script_timeout(10)
    topics = Topics(SITE_ID)
    bare = Bus(broker, "bench-bare")
    # Where the key path's time goes: a subscriber beside the screens daemon notes when the
    # counter's request and the hall's window state pass the broker.
    spy = _Spy(broker, (topics.request("counter-W1", "call"), *map(topics.window_state, (1, 2))))
    bare.start()
    spy.bus.start()
    time.sleep(0.5)  # retained states delivered to the spy and out of the way
    topic = topics.window_state(2)
    key_s, bare_s = [], []
    legs: dict[str, list[float]] = {"counter": [], "hall": [], "screens": []}
    hops: list[float] = []  # a bare publish → the spy: one pass through the broker
    for i in range(presses + 10):
        number = f"A{i + 1:05d}"
        time.sleep(SETTLE_S)
        spy.clear()
        began = time.time()
        keys.tap("KEY_KPENTER")
        # Until the state has passed, the bench only waits (no browser round trips, the
        # GIL free for the spy); the page notes when it showed the number meanwhile.
        state = spy.wait_for(number.encode())
        key_at = _seen(driver, "seen", number)
        asked = spy.first(lambda t, p: t.endswith("/call"))
        keys.tap("KEY_KPDOT")  # finish: the next call is a new key, no lockout
        _idle(driver, 1)
        fake = f"B{i + 1:05d}"
        time.sleep(SETTLE_S)
        sent = time.time()
        bare.publish(topic, _window_state(2, fake, sent))
        hop = spy.wait_for(fake.encode())
        bare_at = _seen(driver, "bare", fake)
        if i >= 10:  # warm-up
            key_s.append(key_at - began)
            bare_s.append(bare_at - sent)
            if asked is not None and state is not None:
                legs["counter"].append(asked - began)
                legs["hall"].append(state - asked)
                legs["screens"].append(key_at - state)
            if hop is not None:
                hops.append(hop - sent)
    bare.stop()
    spy.bus.stop()
    key_run, bare_run = Run(key_s, sum(key_s)), Run(bare_s, sum(bare_s))
    hop_run, commit_run = Run(hops, sum(hops)), _durable_commits(work)
    # The key path cannot beat the bare path plus what it must add: one more pass through
    # the broker (counter → hall) and the hall's commit on disk before anything is shown.
    floor = [bare_run.p50_ms + hop_run.p50_ms + commit_run.p50_ms]
    return {
        "key_to_dom": key_run.summary(),
        "bare_publish_to_dom": bare_run.summary(),
        "ratio_p50": ratio(key_run.p50_ms, bare_run.p50_ms),
        "ratio_p99": ratio(key_run.p99_ms, bare_run.p99_ms),
        # key → request at the broker; request → window state at the broker; → DOM
        "key_legs": {leg: Run(times, sum(times)).summary() for leg, times in legs.items()},
        "broker_pass": hop_run.summary(),
        "durable_commit": commit_run.summary(),
        "floor_p50_ms": round(floor[0], 3),
        "floor_ratio_p50": ratio(floor[0], bare_run.p50_ms),
    }


class _Spy:
    """A subscriber beside the screens daemon: when each watched message passed the
    broker (its epoch time as it arrived here)."""

    def __init__(self, broker: str, topics: tuple[str, ...]) -> None:
        self.bus = Bus(broker, "bench-spy")
        self.passed: list[tuple[float, str, bytes]] = []
        self._changed = threading.Condition()
        for topic in topics:
            self.bus.subscribe(topic, self._note, qos=0)

    def _note(self, message: Message) -> None:
        with self._changed:
            self.passed.append((time.time(), message.topic, message.payload))
            self._changed.notify_all()

    def clear(self) -> None:
        with self._changed:
            self.passed.clear()

    def first(self, match: Callable[[str, bytes], bool]) -> float | None:
        with self._changed:
            return next((at for at, topic, payload in self.passed if match(topic, payload)), None)

    def wait_for(self, text: bytes, timeout: float = 10.0) -> float | None:
        """When a message carrying `text` passed (waiting for it), or None."""
        with self._changed:
            self._changed.wait_for(lambda: any(text in p for _, _, p in self.passed), timeout)
        return self.first(lambda topic, payload: text in payload)


def _durable_commits(work: Path, count: int = 200) -> Run:
    """A bare durable SQLite commit (WAL, synchronous=FULL, as the hall's) of one small row,
    on the hall's own disk."""
    db = sqlite3.connect(work / "bare-commit.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, data TEXT NOT NULL)")
    times = []
    for _ in range(count):
        began = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO events (data) VALUES (?)", ("x" * 300,))
        db.execute("COMMIT")
        times.append(time.perf_counter() - began)
    db.close()
    return Run(times, sum(times))


def _hall_commits(site: Path, work: Path, count: int = 100) -> tuple[dict[str, Any], float]:
    """The hall's own commit of a call (Store.commit: the event, the ticket, the answer,
    with the hall's tables and indexes), the same way as the bare one, and the WAL it
    writes (KB, p50)."""
    from hall.engine import Engine
    from hall.store import Store
    from quhao.config import load
    from quhao.wire import ok

    config = load(site)
    store = Store(work / "hall-commit" / "hall.sqlite", site=SITE_ID)
    engine = Engine(config, SECRET)
    wal = store.path.with_name(store.path.name + "-wal")

    def decide(device: str, action: str, payload: dict[str, Any], rid: str) -> Any:
        outcome = engine.handle(device, action, {**payload, "rid": rid}, time.time())
        touched = {e.data["ticket"] for e in outcome.events if "ticket" in e.data}
        answer = [(device, rid, time.time(), ok(rid, outcome.response))]
        return outcome.events, [engine.tickets[t] for t in touched], answer

    for i in range(count + 10):  # a ticket for every call below
        store.commit(*decide("kiosk-K1", "issue", {"service": "bench", "person": None}, f"i{i}"))
    times, written = [], []
    for i in range(count):
        call = decide("counter-W1", "call", {}, f"c{i}")
        began = time.perf_counter()
        store.commit(*call)
        times.append(time.perf_counter() - began)
        store.commit(*decide("counter-W1", "finish", {}, f"f{i}"))
    for i in range(5):  # apart from the timing: a checkpoint empties the WAL first
        store.checkpoint()
        store.commit(*decide("counter-W1", "call", {}, f"w{i}"))
        written.append(wal.stat().st_size)
        store.commit(*decide("counter-W1", "finish", {}, f"v{i}"))
    store.close()
    return Run(times, sum(times)).summary(), round(sorted(written)[len(written) // 2] / 1024, 1)


def _seen(driver: Any, name: str, number: str) -> float:
    """When the page saw `number` (epoch seconds), waiting in the page for it."""
    from selenium.common.exceptions import TimeoutException

    try:
        return float(driver.execute_async_script(SEEN, name, number)) / 1000
    except TimeoutException:
        raise TimeoutError(f"{number} never showed on the board") from None


def _idle(driver: Any, window: int, timeout: float = 10.0) -> None:
    """Until the board shows the window free again (its finish went through)."""
    query = f"return document.querySelector('.cell[data-window=\"{window}\"] .ticket').textContent"
    deadline = time.monotonic() + timeout
    while driver.execute_script(query) != "空闲":
        if time.monotonic() > deadline:
            raise TimeoutError(f"window {window} never became free")
        time.sleep(0.005)


def _window_state(window: int, ticket: str, at: float) -> dict[str, Any]:
    term = {
        "device": f"bare-W{window}",
        "status": "serving",
        "ticket": ticket,
        "ticket_id": f"2026-01-01/{ticket}",
        "service": "other",
        "called_at": at,
        "staff": None,
        "staff_name": None,
        "since": at,
    }
    return {
        "window": window,
        "name": "",
        "status": "serving",
        "ticket": ticket,
        "ticket_id": term["ticket_id"],
        "service": "other",
        "service_name": "其他业务",
        "called_at": at,
        "staff": None,
        "staff_name": None,
        "since": at,
        "services": ["other"],
        "terminals": [term],
    }


# ---- (b) 2,000 ticket pages ----------------------------------------------------------


def _pages(
    base: str,
    ids: list[str],
    daemon_pid: int,
    kiosk: HallClient,
    bus: Bus,
    broker: str,
    calls: int,
) -> dict[str, Any]:
    key = ticketpage.page_key(SECRET)
    paths = [f"/events{ticketpage.path(key, SITE_ID, tid)}" for tid in ids]
    ctx = mp.get_context("spawn")
    report: mp.queues.Queue[Any] = ctx.Queue()
    ready, done = ctx.Event(), ctx.Event()
    client = ctx.Process(target=_load_client, args=(base, paths, ready, done, report), daemon=True)
    rss_before = rss_mb(daemon_pid)
    client.start()
    if not ready.wait(120):
        raise RuntimeError("the load client did not connect its pages")
    connected = report.get(timeout=10)
    rss_connected = rss_mb(daemon_pid)
    counter = HallClient(bus, Topics(SITE_ID), "counter-W1")  # the calls: as the counter
    cpu_before, wall_before = cpu_seconds(daemon_pid), time.monotonic()
    sent: dict[str, float] = {}
    for _ in range(calls):
        began = time.time()
        answer = counter.request("call", {})
        if answer.get("ticket"):
            sent[answer["ticket"]["id"]] = began
        # One call a second: already several times a busy hall's rate (41 windows, a
        # citizen every few minutes each); each call moves every page of the queue.
        time.sleep(CALL_INTERVAL_S)
    time.sleep(1.0)
    cpu = cpu_seconds(daemon_pid) - cpu_before
    wall = time.monotonic() - wall_before
    import urllib.request

    with urllib.request.urlopen(base + "/status", timeout=10) as response:
        hub = json.loads(response.read())  # streams open, refused, dropped (fell behind)
    done.set()
    seen: dict[str, float] = report.get(timeout=60)
    client.join(30)
    latencies = [seen[t] - at for t, at in sent.items() if t in seen]
    run = Run(latencies, wall, failures=len(sent) - len(latencies))
    return {
        "pages": len(paths),
        "connected": connected,
        "calls": len(sent),
        "streams": hub,
        "call_to_page": run.summary(),
        "daemon_rss_mb_before": round(rss_before, 1),
        "daemon_rss_mb_connected": round(rss_connected, 1),
        "daemon_rss_mb_after": round(rss_mb(daemon_pid), 1),
        "daemon_cpu_s": round(cpu, 2),
        "daemon_cpu_share": round(cpu / wall, 3),
        "daemon_cpu_ms_per_call": round(cpu * 1000 / max(1, len(sent)), 2),
    }


def _load_client(
    base: str, paths: list[str], ready: Any, done: Any, report: mp.queues.Queue[Any]
) -> None:
    _raise_fd_limit()
    report_seen: dict[str, float] = asyncio.run(_load(base, paths, ready, done, report))
    report.put(report_seen)


async def _load(
    base: str, paths: list[str], ready: Any, done: Any, report: mp.queues.Queue[Any]
) -> dict[str, float]:
    import aiohttp

    seen: dict[str, float] = {}
    opened = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:

        async def page(path: str) -> None:
            nonlocal opened
            ticket = "/".join(path.split("/")[3:5])
            async with session.get(path) as response:
                if response.status != 200:
                    return
                opened += 1
                async for raw in response.content:
                    if raw.startswith(b"data: ") and b'"status": "called"' in raw:
                        seen.setdefault(ticket, time.time())

        tasks = []
        for i, path in enumerate(paths):
            tasks.append(asyncio.create_task(page(path)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)  # connect in waves, as phones would
        while opened < len(paths):
            await asyncio.sleep(0.1)
            if all(t.done() for t in tasks):
                break
        report.put(opened)
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return seen


def _print(results: dict[str, Any]) -> None:
    key, bare = results["key_to_dom"], results["bare_publish_to_dom"]
    print(
        f"\ncaller key → board DOM (Chromium) vs bare window-state publish → same page "
        f"({key['n']} presses)"
    )
    print(f"{'':34}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'bare publish → DOM':34}{bare['p50_ms']:10.2f}{bare['p99_ms']:10.2f}")
    print(f"{'key → DOM (real chain)':34}{key['p50_ms']:10.2f}{key['p99_ms']:10.2f}")
    print(f"{'ratio':34}{results['ratio_p50']:10.2f}{results['ratio_p99']:10.2f}")
    legs = results["key_legs"]
    for leg, what in (
        ("counter", "key → request at the broker"),
        ("hall", "request → window state (commit)"),
        ("screens", "window state → DOM"),
    ):
        print(f"{'  ' + what:34}{legs[leg]['p50_ms']:10.2f}{legs[leg]['p99_ms']:10.2f}")
    for name, what in (
        ("broker_pass", "one pass through the broker"),
        ("durable_commit", "a bare durable SQLite commit"),
        ("hall_commit", "the hall's commit of a call"),
    ):
        print(f"{what:34}{results[name]['p50_ms']:10.2f}{results[name]['p99_ms']:10.2f}")
    print(
        f"  (the hall's call writes {results['hall_commit_wal_kb']} KB of WAL: its tables' pages)"
    )
    print(
        f"floor of the key path (bare + one pass + one commit): p50 {results['floor_p50_ms']:.2f}"
        f" ms, ratio {results['floor_ratio_p50']:.2f}; with the hall's commit "
        f"{results['floor_hall_commit_p50_ms']:.2f} ms, ratio "
        f"{results['floor_hall_commit_ratio_p50']:.2f}"
    )
    pages = results["pages"]
    call = pages["call_to_page"]
    print(
        f"\n{pages['connected']} ticket pages connected: call → the right page p50 "
        f"{call['p50_ms']:.1f} ms, p99 {call['p99_ms']:.1f} ms ({pages['calls']} calls, "
        f"{call['failures']} missed); daemon RSS {pages['daemon_rss_mb_before']} → "
        f"{pages['daemon_rss_mb_connected']} MB, CPU {pages['daemon_cpu_ms_per_call']} ms "
        f"per call ({pages['daemon_cpu_share']:.0%} of a core)"
    )
    print(json.dumps(results, separators=(",", ":")))
