"""Site files for the chaos run: a 24-hour hall with limits no test device can meet.

The chaos devices are real names of the site (the hall takes the asker from the topic
and its role from the site): `kiosk-K1…` and `counter-…` carry the load, `kiosk-P` probes
latency, `kiosk-F…`/`counter-F…` send the malformed requests, `kiosk-S`/`counter-S` act
in the storage and midnight checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOAD_SERVICES = ("social", "tax", "enquiry")
# (name, window) of the load counters, in the order they are used: two terminals at
# window 1 (一窗双岗), then one per further window.
COUNTER_SLOTS = (
    ("counter-W1", 1),
    ("counter-W2", 2),
    ("counter-W1b", 1),
    ("counter-W3", 3),
    ("counter-W2b", 2),
    ("counter-W3b", 3),
)
WINDOW_SERVICES = {1: ("social", "tax"), 2: ("tax", "enquiry"), 3: ("social", "enquiry")}
FUZZ_WINDOW = 9


@dataclass(frozen=True)
class ChaosSite:
    """The devices of one chaos site file."""

    site_id: str
    kiosks: tuple[str, ...]  # load kiosks
    counters: tuple[tuple[str, int], ...]  # load counters and their windows
    fuzzers: int  # kiosk-F{n} and counter-F{n}, n = 1..fuzzers

    def fuzz_devices(self) -> list[tuple[str, str]]:
        """(kiosk, counter) identity pairs, one per fuzzer process."""
        return [(f"kiosk-F{n}", f"counter-F{n}") for n in range(1, self.fuzzers + 1)]


def chaos_site(site_id: str, kiosks: int, counters: int, fuzzers: int = 2) -> ChaosSite:
    if not 1 <= counters <= len(COUNTER_SLOTS):
        raise ValueError(f"counters must be 1 to {len(COUNTER_SLOTS)}")
    return ChaosSite(
        site_id,
        tuple(f"kiosk-K{k}" for k in range(1, kiosks + 1)),
        COUNTER_SLOTS[:counters],
        fuzzers,
    )


def site_toml(
    site: ChaosSite,
    *,
    day_end: str = "expire",
    disk_low_mb: int = 200,
    name: str = "混沌测试大厅",
) -> str:
    """The site file: open around the clock, five-digit numbers, no caps or quotas that
    a flood of distinct people would meet, and per-device limits far above the load."""
    lines = [
        "# Written by `quhao chaos`: a 24-hour hall for the chaos run.",
        "[site]",
        f'id = "{site.site_id}"',
        f'name = "{name}"',
        'timezone = "Asia/Shanghai"',
        'hours = ["00:00-24:00"]',
        f'day_end = "{day_end}"',
        "",
        "[queue]",
        "interleave = 2",
        "max_recalls = 2",
        "reinstate_behind = 2",
        "elderly_age = 65",
        "number_width = 5",
        "",
        "[limits]",
        "kiosk = { per_s = 1000, burst = 1000 }",
        "counter = { per_s = 1000, burst = 1000 }",
        f"disk_low_mb = {disk_low_mb}",
        "",
        "[[services]]",
        'id = "social"',
        'name = "社保业务"',
        'prefix = "A"',
        "max_wait_minutes = 1440",
        "quota = { tickets = 2, hours = 2 }",
        'priorities = ["elderly"]',
        "",
        "[[services]]",
        'id = "tax"',
        'name = "税务业务"',
        'prefix = "B"',
        "max_wait_minutes = 1440",
        "quota = false",
        "",
        "[[services]]",
        'id = "enquiry"',
        'name = "综合咨询"',
        'prefix = "K"',
        "max_wait_minutes = 1440",
        "quota = false",
        "id_required = false",
        "",
    ]
    for number, services in sorted(WINDOW_SERVICES.items()):
        listed = ", ".join(f'"{s}"' for s in services)
        lines += ["[[windows]]", f"number = {number}", f"services = [{listed}]", ""]
    lines += ["[[windows]]", f"number = {FUZZ_WINDOW}", 'services = ["enquiry"]', ""]
    kiosks = [*site.kiosks, "kiosk-P", "kiosk-S", *(k for k, _ in site.fuzz_devices())]
    for kiosk in kiosks:
        lines += ["[[kiosks]]", f'name = "{kiosk}"', ""]
    counters = [*site.counters, ("counter-S", 2)]
    counters += [(c, FUZZ_WINDOW) for _, c in site.fuzz_devices()]
    for counter, window in counters:
        lines += ["[[counters]]", f'name = "{counter}"', f"window = {window}", ""]
    return "\n".join(lines)


def write_site(path: Path, site: ChaosSite, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(site_toml(site, **options), encoding="utf-8")  # type: ignore[arg-type]
    return path
