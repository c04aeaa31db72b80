"""A one-line progress bar on stderr, for long embed and evaluation jobs.

    with Progress(total=len(texts), label="corpus") as bar:
        for chunk in chunks:
            ...
            bar.update(len(chunk))

On a terminal the line is redrawn in place (``\\r``). When stderr is not a terminal
(CI logs, files) a plain line is written now and then instead, so logs stay readable.
Writing can never raise: a closed or missing stderr just silences the bar.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

# Below this many items a job on a non-terminal is short enough to need no report.
LARGE_TOTAL = 5000
_BAR_WIDTH = 24
_TTY_REDRAW_S = 0.1  # redraw at most 10 times a second: drawing is not free
_LOG_EVERY_S = 10.0  # on a non-terminal, one line every 10 s at most


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):  # closed or odd stream objects
        return False


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Count of done items out of ``total``, with rate and ETA, drawn on one line.

    ``enabled=None`` turns the bar on when stderr is a terminal or ``total`` is at least
    ``LARGE_TOTAL``; ``True``/``False`` force it. When disabled nothing is ever written.
    ``stream`` defaults to ``sys.stderr`` (looked up at construction time).
    """

    def __init__(
        self,
        total: int,
        label: str,
        enabled: bool | None = None,
        *,
        stream: TextIO | None = None,
    ) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.done = 0
        self._stream = sys.stderr if stream is None else stream
        self._tty = is_terminal(self._stream)
        if enabled is None:
            enabled = self._tty or self.total >= LARGE_TOTAL
        self.enabled = bool(enabled) and self._stream is not None
        self._start = time.monotonic()
        self._last_draw = float("-inf")
        self._closed = False

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Add ``n`` finished items and redraw if enough time has passed."""
        self.done += n
        if not self.enabled or self._closed:
            return
        now = time.monotonic()
        interval = _TTY_REDRAW_S if self._tty else _LOG_EVERY_S
        if now - self._last_draw >= interval:
            self._draw(now, final=False)

    def close(self) -> None:
        """Draw the final state once and end the line. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(time.monotonic(), final=True)

    def line(self, now: float | None = None) -> str:
        """The text of the bar, e.g. ``corpus [#####...] 512/5183  10%  85.2/s  ETA 0:54``."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            frac = min(self.done / self.total, 1.0)
            filled = int(frac * _BAR_WIDTH)
            bar = "#" * filled + "." * (_BAR_WIDTH - filled)
            head = f"{self.label} [{bar}] {self.done}/{self.total} {frac:4.0%}"
        else:
            head = f"{self.label} {self.done}"
        if self.done >= self.total or rate <= 0:
            tail = f"{rate:.1f}/s  {_fmt_duration(elapsed)}"
        else:
            tail = f"{rate:.1f}/s  ETA {_fmt_duration((self.total - self.done) / rate)}"
        return f"{head}  {tail}"

    def _draw(self, now: float, final: bool) -> None:
        self._last_draw = now
        text = self.line(now)
        if self._tty:
            # \r returns to the line start; \x1b[K clears what a longer line left behind.
            text = "\r" + text + "\x1b[K" + ("\n" if final else "")
        else:
            text = text + "\n"
        try:
            self._stream.write(text)
            self._stream.flush()
        except (AttributeError, ValueError, OSError):  # closed/broken stderr: stay silent
            self.enabled = False
