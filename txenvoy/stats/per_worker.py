# -*- test-case-name: tests.stats.test_per_worker -*-
"""
Stat objects made once per worker.

A compiled filter or listener is shared by every worker, but each worker
writes only its own stats shard. L{PerWorker} keeps one object per worker,
made on first use on that worker's thread; L{StatsStruct} resolves a group
of names under one prefix into attributes, so the data path does
C{stats.downstream_cx_total.inc()} and never looks a name up.
"""

from types import MethodType


class StatsStruct:
    """
    Attributes named after stats: counters, gauges and histograms of one
    prefix in one shard.
    """

    def __init__(self, shard, prefix, counters=(), gauges=(), histograms=()):
        scope = shard.scope(prefix)
        for name in counters:
            setattr(self, name, scope.counter(name))
        for name in gauges:
            setattr(self, name, scope.gauge(name))
        for name in histograms:
            setattr(self, name, scope.histogram(name))


class PerWorker:
    """
    C{make(dispatcher)} once per worker; L{get} from that worker's thread.
    Different workers add different keys, which a dict takes safely under
    the GIL.
    """

    def __init__(self, make):
        self._make = make
        self._byWorker = {}

    def get(self, dispatcher):
        value = self._byWorker.get(dispatcher.name)
        if value is None:
            value = self._byWorker[dispatcher.name] = self._make(dispatcher)
        return value


class perWorkerMethod:
    """
    A method C{obj.name(dispatcher)} returning C{make(obj, dispatcher)},
    made once per worker and kept in C{obj}: the class-level form of
    C{self.name = PerWorker(lambda d: make(self, d)).get}, which the object
    would hold and which would hold the object. A configuration object
    must hold no such cycle: when an update replaces it, reference counting
    alone frees it (the collector's walk of the whole heap that a cycle
    needs pauses every worker; L{txenvoy.server.gc_freeze}). For example::

        class Config:
            statsFor = perWorkerMethod(lambda self, d: Stats(d.stats, self.statPrefix))
    """

    def __init__(self, make):
        self._make = make
        self._key = "_perWorker_%x" % (id(self),)

    def __set_name__(self, owner, name):
        self._key = "_perWorker_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return MethodType(self._get, obj)

    def _get(self, obj, dispatcher):
        try:
            return obj.__dict__[self._key][dispatcher.name]
        except KeyError:
            pass
        byWorker = obj.__dict__.get(self._key)
        if byWorker is None:
            byWorker = obj.__dict__[self._key] = {}
        value = byWorker[dispatcher.name] = self._make(obj, dispatcher)
        return value
