"""A dependency-free progress bar with rate and ETA (stderr)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str = "", stream=sys.stderr, every: float = 0.5):
        self.total, self.label, self.stream, self.every = max(total, 1), label, stream, every
        self.n, self.t0, self.last, self.postfix = 0, time.time(), 0.0, ""

    def update(self, k: int = 1, postfix: str = "") -> None:
        self.n += k
        if postfix:
            self.postfix = postfix
        now = time.time()
        if now - self.last >= self.every or self.n >= self.total:
            self.last = now
            el = now - self.t0
            rate = self.n / el if el > 0 else 0.0
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            frac = self.n / self.total
            bar = "#" * int(frac * 24)
            self.stream.write(f"\r{self.label} [{bar:<24}] {self.n}/{self.total} {rate:.1f}/s "
                              f"elapsed {el:.0f}s eta {eta:.0f}s {self.postfix}   ")
            self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
