"""The server process's own moving parts as gauges: event-loop tasks and Python threads.

What a soak watches besides memory and file descriptors (ProcessCollector's `process_*` series): a task or
thread that is started per request, per swap or per connection and never ends shows up here as a climb.
Read at scrape time; nothing runs between scrapes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class RuntimeCollector(Collector):
    """`serving_event_loop_tasks` (tasks not yet done on the server's loop) and `serving_python_threads`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # all_tasks(loop) is safe from another thread: it copies the loop's weak set, retrying if it
        # changes during the copy.
        tasks = GaugeMetricFamily(
            "serving_event_loop_tasks", "asyncio tasks not yet done on the server's event loop"
        )
        tasks.add_metric([], len(asyncio.all_tasks(self._loop)))
        yield tasks
        threads = GaugeMetricFamily("serving_python_threads", "Python threads alive in the server process")
        threads.add_metric([], threading.active_count())
        yield threads
