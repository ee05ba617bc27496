"""
Prometheus metrics of a gateway: requests, latency, sessions, handles and
PB calls by outcome, in the text exposition format.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

__all__ = ["Metrics"]

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    inner = ",".join(
        f'{name}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for name, value in pairs
    )
    return "{" + inner + "}" if inner else ""


class Metrics:
    """
    Counters kept by the transports, gauges read when scraped.
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latencyBuckets: dict[str, list[int]] = {}
        self.latencySum: dict[str, float] = {}
        self.latencyCount: dict[str, int] = {}
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.counters: dict[str, tuple[str, Callable[[], dict[str, int]], str]] = {}

    def observeRequest(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        buckets = self.latencyBuckets.get(route)
        if buckets is None:
            buckets = self.latencyBuckets[route] = [0] * len(BUCKETS)
            self.latencySum[route] = 0.0
            self.latencyCount[route] = 0
        index = bisect_left(BUCKETS, seconds)  # the first bound >= seconds
        if index < len(BUCKETS):
            buckets[index] += 1
        self.latencySum[route] += seconds
        self.latencyCount[route] += 1

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help, read)

    def labelledCounter(
        self, name: str, help: str, read: Callable[[], dict[str, int]], label: str
    ) -> None:
        self.counters[name] = (help, read, label)

    def render(self) -> str:
        lines = [
            "# HELP pbgw_http_requests_total HTTP requests by method, route and status.",
            "# TYPE pbgw_http_requests_total counter",
        ]
        for (method, route, status), count in sorted(self.requests.items()):
            labels = _labels((("method", method), ("route", route), ("status", status)))
            lines.append(f"pbgw_http_requests_total{labels} {count}")
        lines += [
            "# HELP pbgw_http_request_duration_seconds HTTP request latency by route.",
            "# TYPE pbgw_http_request_duration_seconds histogram",
        ]
        for route, buckets in sorted(self.latencyBuckets.items()):
            cumulative = 0
            for bound, count in zip(BUCKETS, buckets, strict=True):
                cumulative += count
                labels = _labels((("route", route), ("le", repr(bound))))
                lines.append(f"pbgw_http_request_duration_seconds_bucket{labels} {cumulative}")
            labels = _labels((("route", route), ("le", "+Inf")))
            lines.append(
                f"pbgw_http_request_duration_seconds_bucket{labels} {self.latencyCount[route]}"
            )
            labels = _labels((("route", route),))
            lines.append(f"pbgw_http_request_duration_seconds_sum{labels} {self.latencySum[route]}")
            lines.append(
                f"pbgw_http_request_duration_seconds_count{labels} {self.latencyCount[route]}"
            )
        for name, (help, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help}", f"# TYPE {name} gauge", f"{name} {read()}"]
        for name, (help, readCounts, label) in sorted(self.counters.items()):
            lines += [f"# HELP {name} {help}", f"# TYPE {name} counter"]
            for value, count in sorted(readCounts().items()):
                lines.append(f"{name}{_labels(((label, value),))} {count}")
        return "\n".join(lines) + "\n"
