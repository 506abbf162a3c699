"""Per-device token buckets: no device can ask the hall more than a real one ever would.

Pure: time is passed in. A kiosk that floods (a script on a stolen credential) is
answered `rate_limited` before its requests reach the engine or the disk, and the
other devices never notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quhao.config import Rate


@dataclass
class TokenBucket:
    rate: Rate
    tokens: float = -1.0  # starts full
    updated: float = 0.0

    def take(self, now: float) -> bool:
        """Spend one token if there is one; refill by the time passed since the last call."""
        if self.tokens < 0:
            self.tokens, self.updated = float(self.rate.burst), now
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.rate.burst), self.tokens + elapsed * self.rate.per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class DeviceLimiter:
    """One bucket per device, with the rate of its role."""

    rates: dict[str, Rate]
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def allow(self, device: str, role: str, now: float) -> bool:
        rate = self.rates.get(role)
        if rate is None:
            return True
        bucket = self.buckets.get(device)
        if bucket is None or bucket.rate != rate:
            bucket = self.buckets[device] = TokenBucket(rate)
        return bucket.take(now)
