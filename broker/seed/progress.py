"""A progress line on stderr for long command-line jobs: each phase with its count, rate and time left.

On a terminal the line is redrawn in place a few times a second; otherwise (a log file, CI) one line is written
every `quiet_interval` seconds and when a phase ends, so that a log stays readable.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

_WIDTH = 16


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


@dataclass
class Phase:
    name: str
    unit: str
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def rate(self, now: float) -> float:
        elapsed = (self.ended or now) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def render(self, now: float) -> str:
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * _WIDTH)
        bar = "█" * filled + ("▌" if fraction * _WIDTH - filled >= 0.5 else "").ljust(_WIDTH - filled)
        rate = self.rate(now)
        elapsed = (self.ended or now) - self.started
        if self.ended is not None:
            left = f"in {_duration(elapsed)}"
        elif rate > 0:
            left = f"{_duration(elapsed)} < {_duration((self.total - self.done) / rate)}"
        else:
            left = _duration(elapsed)
        return f"{self.name} ▕{bar}▏ {self.done:,}/{self.total:,} {self.unit} {rate:,.0f}/s {left}"


class Progress:
    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.2, quiet_interval: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if self.tty else quiet_interval
        self.phases: list[Phase] = []
        self._shown = 0.0

    def start(self, name: str, total: int, unit: str) -> Phase:
        phase = Phase(name, unit, total)
        self.phases.append(phase)
        self.show(force=True)
        return phase

    def advance(self, phase: Phase, amount: int) -> None:
        phase.done += amount
        self.show()

    def finish(self, phase: Phase) -> None:
        """End the phase and leave its final line (count, rate, time) in the output."""
        phase.ended = time.monotonic()
        self.phases.remove(phase)
        self._write(phase.render(phase.ended), final=True)
        self.show(force=True)

    def show(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.phases or (not force and now - self._shown < self.interval):
            return
        self._shown = now
        self._write(" · ".join(p.render(now) for p in self.phases), final=not self.tty)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def _write(self, line: str, *, final: bool) -> None:
        if self.tty:
            self.stream.write(f"\r\x1b[K{line}" + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
