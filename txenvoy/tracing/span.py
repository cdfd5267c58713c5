# -*- test-case-name: tests.tracing.test_http_tracer -*-
"""
What every tracer's span keeps and does alike: its name, tags, events and
sampling decision, and its hand-off to the worker's reporter when it ends.
A tracer's span class adds its ids, how it propagates its context and how
it is written on the wire.
"""


class ReportedSpan:
    """
    A span reported to its worker's reporter when it finishes sampled: the
    half of L{txenvoy.interfaces.ISpan} that does not depend on the trace
    format (a subclass adds C{injectContext} and C{spawnChild}).

    @ivar timestamp: the start, wall-clock seconds.
    @ivar end: the finish, or C{None} while the span is open.
    @ivar events: C{(timestamp, name)} pairs (C{verbose} annotations).
    """

    def __init__(self, reporter, name, kind, sampled, timestamp):
        self._reporter = reporter
        self.name = name
        self.kind = kind
        self.sampled = sampled
        self.timestamp = timestamp
        self.tags = {}
        self.events = []
        self.end = None

    def setOperation(self, name):
        self.name = name

    def setTag(self, name, value):
        self.tags[name] = value

    def log(self, timestamp, event):
        self.events.append((timestamp, event))

    def setSampled(self, sampled):
        self.sampled = sampled

    def finishSpan(self, timestamp):
        if self.end is not None:
            return
        self.end = timestamp
        self.finished(timestamp)
        if self.sampled:
            self._reporter.report(self)

    def finished(self, timestamp):
        """A subclass's last word before the span is reported (nothing here)."""
