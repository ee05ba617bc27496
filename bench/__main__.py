"""
Run the benchmark suites and print one table: C{python -m bench [--quick]}.

Each suite is a module of this package with C{async def run(reactor, quick)}
returning L{Row}s; L{SUITES} lists them. The reactor cannot be restarted, so
this entry point owns it and runs the suites one after another under it. The
table starts with the date, the machine, the versions measured and how long
each suite took.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import twisted
from twisted.internet.defer import Deferred

from bench import fanout, memory, pb_core, rest, websocket
from bench._progress import elapsed, progress
from bench.pb_core import Row

Suite = Callable[[Any, bool], Awaitable[list[Row]]]

SUITES: dict[str, Suite] = {
    "pb_core": pb_core.run,
    "rest": rest.run,
    "websocket": websocket.run,
    "fanout": fanout.run,
    "memory": memory.run,
}

_ROOT = Path(__file__).resolve().parent.parent


def cpuModel() -> str:
    """
    The CPU model named in C{/proc/cpuinfo}, or what C{platform} knows, and
    whether it is virtual (its CPUs may then share cores with other guests).
    """
    model = platform.processor() or "unknown CPU"
    virtual = False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    virtual = "hypervisor" in line.split()
    except OSError:
        pass
    return model + (" (virtual machine)" if virtual else "")


def sourceRevision() -> str:
    """
    The git revision of this checkout, marked C{-dirty} when it has
    uncommitted changes (which the figures then include).
    """
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


@attrs.frozen
class CpuSample:
    """
    CPU time used so far by the whole machine (from C{/proc/stat}, L{None}
    where there is none) and by this process and its reaped children.
    """

    wall: float
    machine: float | None
    ours: float

    @classmethod
    def take(cls) -> CpuSample:
        times = os.times()
        ours = times.user + times.system + times.children_user + times.children_system
        return cls(time.monotonic(), _machineBusySeconds(), ours)


def _machineBusySeconds() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(field) for field in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait,
    # steal included (another guest had our CPU).
    busy = sum(fields[:3]) + sum(fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def otherLoad(start: CpuSample, end: CpuSample, cpus: int) -> str:
    """
    How much of the machine processes other than the benchmark used while it
    ran: they compete with it for the CPUs and make its figures noisy.
    """
    if start.machine is None or end.machine is None:
        return "unknown (no /proc/stat)"
    others = (end.machine - start.machine) - (end.ours - start.ours)
    share = max(0.0, others / ((end.wall - start.wall) * cpus))
    text = f"other processes used {share:.0%} of the {cpus} CPUs during the run"
    if share > 0.05:
        text += " (expect noisy figures, the sequential call rates most)"
    return text


def environment(
    quick: bool, start: CpuSample, end: CpuSample, durations: Sequence[tuple[str, float]]
) -> list[tuple[str, str]]:
    """
    What the figures were measured on, how busy the machine was, and how
    long the run took: in all (from the start of the process) and by suite.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpus = f"{os.cpu_count()} CPUs" + (f" ({usable} usable)" if usable is not None else "")
    return [
        ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("machine", f"{cpus}, {cpuModel()}, {platform.system()} {platform.release()}"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("twisted", twisted.__version__),
        ("source", sourceRevision()),
        ("mode", "quick" if quick else "full"),
        ("load", otherLoad(start, end, usable or os.cpu_count() or 1)),
        ("duration", formatDurations(durations)),
    ]


def formatDurations(durations: Sequence[tuple[str, float]]) -> str:
    """
    The wall time of the whole run so far and of each suite, e.g. C{"41 s
    (pb_core 14 s, rest 9 s)"}.
    """
    suites = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in durations)
    return f"{elapsed():.0f} s ({suites})"


def formatFigure(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 10_000 else f"{value / 1000:,.2f} s"
    if unit == "µs":
        return f"{value:,.1f} µs"
    if unit == "calls/s":
        return f"{value:,.0f}/s"
    if unit == "bytes":
        return f"{value:,.0f} B"
    return f"{value:,g} {unit}"


def _cells(row: Row) -> list[str]:
    ratio = f"{row.ratio:.2f}x"
    baseline = formatFigure(row.baseline, row.unit)
    if row.baselineCapped:
        ratio = ">=" + ratio
        baseline = ">" + baseline
    note = row.note
    if abs(row.ratioOfMedians / row.ratio - 1) > 0.05:
        # Say so when the paired ratio disagrees with the figures shown.
        note += f"; the medians shown give {row.ratioOfMedians:.2f}x"
    return [
        row.name,
        formatFigure(row.ours, row.unit),
        baseline,
        ratio,
        f">={row.target:g}x" if row.target is not None else "",
        row.verdict,
        note,
    ]


# Each row names its baseline: Twisted's PB for the PB core rows; bare Klein,
# the naive gateway, autobahn or the memory budget for the gateway's.
HEADERS = ["benchmark", "ours", "baseline", "ours/baseline", "target", "", "notes"]


def formatTable(rows: Sequence[Row]) -> str:
    """
    The rows as an aligned text table; the ratio is a speed ratio (the
    baseline's time over ours, or our rate over the baseline's), so above 1
    means faster.
    """
    table = [HEADERS, *(_cells(row) for row in rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(HEADERS))]
    aligned = [
        "  ".join(
            cell.ljust(width) if column in (0, 6) else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    ]
    aligned.insert(1, "-" * len(aligned[0]))
    return "\n".join(aligned)


def formatMarkdown(rows: Sequence[Row]) -> str:
    """
    The rows as a Markdown table, for C{docs/benchmarks.md}.
    """
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(["---", "--:", "--:", "--:", "--:", ":-:", "---"]) + "|",
    ]
    for row in rows:
        cells = [cell.replace("|", "\\|") for cell in _cells(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def runSuites(reactor: Any, names: Sequence[str], quick: bool, markdown: bool) -> None:
    rows: list[Row] = []
    durations: list[tuple[str, float]] = []
    start = CpuSample.take()
    for name in names:
        started = time.monotonic()
        rows += await SUITES[name](reactor, quick)
        durations.append((name, time.monotonic() - started))
        progress(name, f"done in {durations[-1][1]:.1f} s")
    end = CpuSample.take()
    print()
    for key, value in environment(quick, start, end, durations):
        print(f"{key + ':':9} {value}")
    print()
    print(formatMarkdown(rows) if markdown else formatTable(rows))
    print()
    print(
        "ours/baseline is a speed ratio (the baseline's time over ours, our rate over the\n"
        "baseline's): the median of the ratios within each repetition, where the two were\n"
        "measured side by side. Each row names its baseline."
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="shorter measurements (the run takes under a minute)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "suites", nargs="*", metavar="SUITE", help=f"suites to run (default: all of {', '.join(SUITES)})"
    )
    options = parser.parse_args(argv)
    unknown = [name for name in options.suites if name not in SUITES]
    if unknown:
        parser.error(f"unknown suite {unknown[0]!r} (choose from {', '.join(SUITES)})")
    names = options.suites or list(SUITES)

    from twisted.internet import task

    task.react(
        lambda reactor: Deferred.fromCoroutine(
            runSuites(reactor, names, options.quick, options.markdown)
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
