"""Hall time. Every daemon reads time from one clock so a simulated day can run fast.

A clock spec is ``system`` or ``HALL_TIME[@REAL_EPOCH][xSPEED]``, e.g.
``2026-11-23T08:30:00+08:00@1795395000x60``: at real time REAL_EPOCH the hall
clock reads HALL_TIME and runs SPEED times faster. Daemons started with the same
spec agree on the time.
"""

from __future__ import annotations

import time
from datetime import datetime


class Clock:
    def __init__(
        self, origin_hall: float | None = None, origin_real: float | None = None, speed: float = 1.0
    ) -> None:
        self.origin_real = time.time() if origin_real is None else origin_real
        self.origin_hall = self.origin_real if origin_hall is None else origin_hall
        self.speed = speed

    def now(self) -> float:
        return self.origin_hall + (time.time() - self.origin_real) * self.speed

    def real_seconds(self, hall_seconds: float) -> float:
        """How long to really wait for this much hall time to pass."""
        return hall_seconds / self.speed

    def spec(self) -> str:
        hall = datetime.fromtimestamp(self.origin_hall).astimezone().isoformat()
        return f"{hall}@{self.origin_real:.6f}x{self.speed:g}"

    @classmethod
    def parse(cls, spec: str | None) -> Clock:
        if not spec or spec == "system":
            return cls()
        text, speed_text = spec.strip(), "1"
        if "x" in text:
            text, speed_text = text.rsplit("x", 1)
        hall_text, _, real_text = text.partition("@")
        try:
            hall = datetime.fromisoformat(hall_text).timestamp() if hall_text else None
            real = float(real_text) if real_text else None
            speed = float(speed_text)
        except ValueError as exc:
            raise ValueError(
                f"bad clock spec {spec!r}: want HALL_ISO_TIME[@REAL_EPOCH][xSPEED] ({exc})"
            ) from exc
        if speed <= 0:
            raise ValueError(f"bad clock spec {spec!r}: speed must be positive")
        return cls(hall, real, speed)
