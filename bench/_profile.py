"""
Sampling profiles of benchmark processes with C{py-spy}, summarised as the
functions that hold the CPU.

C{py-spy record --format raw --function} writes one line per distinct stack,
C{frame;frame;...;leaf COUNT}; idle samples (a thread waiting in C{epoll})
are left out by C{py-spy} itself, so every sample is busy time. L{summary}
ranks functions by own time (the leaf) and shows their inclusive time.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench._servers import Child, spawn

__all__ = ["pySpy", "record", "summary"]

_IDLE = "EPollReactor.doPoll "


def pySpy() -> str | None:
    """
    The C{py-spy} executable (next to this interpreter, or on the path).
    """
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def record(reactor: Any, pid: int, seconds: float, output: str, cpu: int | None) -> Child:
    """
    Start sampling process C{pid} for C{seconds} into C{output} (raw format).
    """
    executable = pySpy()
    if executable is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return spawn(
        reactor, f"py-spy {pid}",
        [executable, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
         "--rate", "250", "--format", "raw", "--function", "--output", output],
        cpu,
    )


def _frameName(frame: str) -> str:
    """
    C{function (path:line)} with the path shortened to the package part.
    """
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            path = tail.split(marker, 1)[-1]
            return f"{head}({path}"
    return frame


def summary(output: str, title: str, top: int = 25) -> str:
    """
    The C{top} functions of a raw C{py-spy} profile by own time.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for line in Path(output).read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_frameName(frame) for frame in stack.split(";")]
        if frames[-1].startswith(_IDLE):
            # py-spy does not always see a thread blocked in epoll as idle.
            idle += samples
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    total = max(total, 1)
    lines = [f"== {title}: {total} busy samples, {idle} idle in epoll (py-spy, 250/s)",
             f"{'self%':>6} {'total%':>6}  function (file:line)"]
    for frame, samples in own.most_common(top):
        lines.append(
            f"{samples / total * 100:6.1f} {inclusive[frame] / total * 100:6.1f}  {frame}"
        )
    lines.append(f"-- by inclusive time (top {top // 2}):")
    for frame, samples in inclusive.most_common(top // 2 + 8)[8:]:
        lines.append(f"       {samples / total * 100:6.1f}  {frame}")
    return "\n".join(lines)
