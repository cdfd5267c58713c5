# -*- test-case-name: tests.admin.test_admin -*-
"""
The admin endpoints: one function per path, taking an L{AdminCall} and
returning an L{AdminResponse}. Bodies, status codes and content types are
Envoy 1.40's (compared with the real binary).
"""

import os
import sys
import time

from txenvoy.admin import _dumps
from txenvoy.admin.active_stats import activeStatsPage
from txenvoy.admin._help import helpText, homePage
from txenvoy.server.logging import LEVELS, UnknownLogger, UnknownLogLevel
from txenvoy.stats import format as statsformat
from txenvoy.regex import RegexError, compilePattern

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"
HTML = "text/html; charset=UTF-8"

#: What Envoy prints when hot restart is off (txenvoy has no Envoy-compatible
#: hot restart protocol).
HOT_RESTART_DISABLED = "disabled"


class AdminResponse:
    """
    @ivar code: the HTTP status.
    @ivar body: C{str} or C{bytes}.
    @ivar contentType: the C{content-type} value.
    """

    def __init__(self, code, body, contentType=TEXT):
        self.code = code
        self.body = body
        self.contentType = contentType

    def bodyBytes(self):
        """The body as UTF-8 bytes."""
        if isinstance(self.body, bytes):
            return self.body
        return self.body.encode("utf-8")


class AdminCall:
    """
    One admin request as the handlers see it.

    @ivar admin: the L{txenvoy.admin.admin.AdminServer}.
    @ivar server: the server it serves.
    @ivar method: C{"GET"}...
    @ivar path: the path without the query.
    @ivar query: C{{name: value}}, decoded, C{""} for a bare flag, the
        first of repeated names.
    @ivar queryItems: every C{(name, value)} in order.
    """

    def __init__(self, admin, method, path, queryItems=()):
        self.admin = admin
        self.server = admin.server
        self.method = method
        self.path = path
        self.queryItems = list(queryItems)
        self.query = {}
        for k, v in self.queryItems:
            self.query.setdefault(k, v)


def _ok():
    return AdminResponse(200, "OK\n")


def _state(server):
    state = server.state()
    if state == "LIVE" and server.healthCheckFailed:
        return "DRAINING"
    return state


def home(call):
    return AdminResponse(200, homePage(), HTML)


def help(call):
    return AdminResponse(200, helpText())


def notFound(call):
    return AdminResponse(404, "invalid path. " + helpText())


def ready(call):
    state = _state(call.server)
    return AdminResponse(200 if state == "LIVE" else 503, state + "\n")


def hotRestartVersion(call):
    return AdminResponse(200, _hotRestartVersion(call.server))


def _hotRestartVersion(server):
    return getattr(server, "hotRestartVersion", None) or HOT_RESTART_DISABLED


def serverInfo(call):
    server = call.server
    uptime = "%ds" % (max(0, int(call.admin.wallTime() - server.startTime)),)
    first = getattr(server, "startTimeFirstEpoch", server.startTime)
    uptimeAll = "%ds" % (max(0, int(call.admin.wallTime() - first)),)
    info = {
        "version": server.versionString,
        "state": _state(server),
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptimeAll,
        "hot_restart_version": _hotRestartVersion(server),
        "command_line_options": _dumps.orderedOptions(server.commandLineOptions()),
        "node": _dumps.protoToOrderedDict(server.node),
        "hot_restart_initializing": False,
    }
    return AdminResponse(200, _dumps.dumpJson(info), JSON)


# Stats.

def _intervals(call):
    flusher = call.admin.statsFlusher
    if flusher is None:
        return None
    return flusher.lastIntervals if flusher.flushes else None


def stats(call):
    try:
        params = statsformat.StatsParams.fromQuery(call.query)
    except statsformat.StatsParamsError as e:
        return AdminResponse(400, str(e))
    if params.format == "active-html":
        return AdminResponse(200, activeStatsPage(call.query.get("filter", ""), params.type),
                             HTML)
    snapshot = call.server.stats.snapshot()
    if params.format == "json":
        return AdminResponse(200, statsformat.jsonStats(snapshot, params, _intervals(call)), JSON)
    if params.format == "prometheus":
        return AdminResponse(200, statsformat.prometheusStats(
            snapshot, params, call.admin.tagProducer))
    text = statsformat.textStats(snapshot, params, _intervals(call))
    if params.format == "html":
        from html import escape
        return AdminResponse(200, "<!DOCTYPE html>\n<html lang='en'>\n<head>\n"
                                  "  <title>Envoy Admin</title>\n</head>\n<body>\n<pre>\n"
                                  + escape(text) + "</pre>\n</body>\n</html>\n", HTML)
    return AdminResponse(200, text)


def statsPrometheus(call):
    query = dict(call.query)
    query.pop("format", None)
    query.pop("type", None)
    mode = query.pop("histogram_buckets", None)
    if mode not in (None, "cumulative"):
        return AdminResponse(400, "usage: /stats/prometheus?histogram_buckets=cumulative "
                                  "(summary is not supported by txenvoy)\n")
    try:
        params = statsformat.StatsParams.fromQuery(query)
    except statsformat.StatsParamsError as e:
        return AdminResponse(400, str(e))
    return AdminResponse(200, statsformat.prometheusStats(
        call.server.stats.snapshot(), params, call.admin.tagProducer))


def resetCounters(call):
    # The server's own, when it has one, also resets its worker processes.
    reset = getattr(call.server, "resetCounters", None) or call.server.stats.resetCounters
    reset()
    return _ok()


def recentLookups(call):
    total = len(call.server.stats.snapshot().counters)
    if not call.admin.recentLookupsEnabled:
        return AdminResponse(200, "Lookup tracking is not enabled. Use "
                                  "/stats/recentlookups/enable to enable.\n\ntotal: %d\n" % total)
    return AdminResponse(200, "   Count Lookup\n\ntotal: %d\n" % (total,))


def recentLookupsEnable(call):
    call.admin.recentLookupsEnabled = True
    return _ok()


def recentLookupsDisable(call):
    call.admin.recentLookupsEnabled = False
    return _ok()


def recentLookupsClear(call):
    return _ok()


# Listeners and clusters.

def _listeners(server):
    return list(getattr(server.listenerManager, "listeners", ()) or ())


def listeners(call):
    ls = _listeners(call.server)
    if call.query.get("format") == "json":
        return AdminResponse(200, _dumps.listenersJson(ls), JSON)
    return AdminResponse(200, _dumps.listenersText(ls))


def clusters(call):
    filterRe = None
    if call.query.get("filter"):
        try:
            filterRe = compilePattern(call.query["filter"])
        except RegexError:
            return AdminResponse(400, "Invalid re2 regex")
    cm = call.server.clusterManager
    if call.query.get("format") == "json":
        return AdminResponse(200, _dumps.clustersJson(cm, filterRe), JSON)
    return AdminResponse(200, _dumps.clustersText(cm, filterRe))


def configDump(call):
    server = call.server
    q = call.query
    ls = [x.proto for x in _listeners(server) if getattr(x, "proto", None) is not None] or None
    cs = None
    cm = getattr(server, "clusterManager", None)
    if cm is not None and getattr(cm, "clusters", None):
        values = cm.clusters.values() if isinstance(cm.clusters, dict) else cm.clusters
        cs = [c.proto for c in values if getattr(c, "proto", None) is not None] or None
    dynamic = dict(server.xds.dumpState()) if getattr(server, "xds", None) else {}
    providers = getattr(server, "routeConfigProviders", None)
    if providers is not None:
        dynamic["rds"] = providers.dumpState()
    secrets = getattr(server, "secretManager", None)
    if secrets is not None:
        dynamic["sds"] = secrets.dumpState()
        dynamic["sds_static"] = secrets.staticSecrets()
    if cm is not None and "include_eds" in q:
        dynamic["eds"] = [
            (name, _dumps.hostsAssignment(c), bool(c.info.addedViaApi))
            for name, c in getattr(cm, "clusters", {}).items()
            if getattr(c, "serviceName", None) is not None]
    try:
        body = _dumps.configDump(
            server.bootstrap, server.startTime, listeners=ls, clusters=cs,
            resource=q.get("resource") or None, mask=q.get("mask") or None,
            nameRegex=q.get("name_regex") or None, includeEds="include_eds" in q,
            dynamic=dynamic)
    except _dumps.ConfigDumpError as e:
        # Envoy answers config_dump errors without a charset.
        return AdminResponse(e.code, str(e), "text/plain")
    return AdminResponse(200, body, JSON)


def initDump(call):
    return AdminResponse(200, "{}\n", JSON)


def certs(call):
    return AdminResponse(200, _dumps.dumpJson({"certificates": []}), JSON)


# Runtime.

def _runtimeString(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def runtime(call):
    loader = getattr(call.admin.server, "runtime", None)
    if hasattr(loader, "dump"):
        return AdminResponse(200, _dumps.dumpJson(loader.dump()), JSON)
    admin = call.admin
    layers = admin.runtimeLayers()
    static = admin.staticRuntime
    overrides = admin.runtimeOverrides
    keys = list(static) + [k for k in overrides if k not in static]
    entries = {}
    for key in keys:
        values = []
        for name, kind in layers:
            if kind == "admin":
                values.append(overrides.get(key, ""))
            elif kind == "static":
                values.append(_runtimeString(static[key]) if key in static else "")
            else:
                values.append("")
        final = next((v for v in reversed(values) if v != ""), "")
        entries[key] = {"layer_values": values, "final_value": final}
    return AdminResponse(200, _dumps.dumpJson(
        {"entries": entries, "layers": [name for name, _ in layers]}), JSON)


def runtimeModify(call):
    items = call.queryItems
    if not items:
        return AdminResponse(400, "usage: /runtime_modify?key1=value1&key2=value2&keyN=valueN\n"
                                  "       or send the parameters as form values\n"
                                  "use an empty value to remove a previously added override")
    loader = getattr(call.admin.server, "runtime", None)
    if hasattr(loader, "mergeValues"):
        from txenvoy.runtime import NoAdminLayer, RuntimeYamlError

        try:
            loader.mergeValues(dict(items))
        except (NoAdminLayer, RuntimeYamlError) as e:
            # Envoy's bodies: no newline after the error.
            return AdminResponse(503, str(e))
        notify = getattr(call.server, "runtimeModified", None)
        if notify is not None:
            notify(dict(items))
        return _ok()
    if not any(kind == "admin" for _, kind in call.admin.runtimeLayers()):
        return AdminResponse(503, "No admin layer specified\n")
    call.admin.modifyRuntime(dict(items))
    return _ok()


# Logging.

_LOGGING_USAGE = (
    "usage: /logging?<name>=<level> (change single level)\n"
    "usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n"
    "usage: /logging?level=<level> (change all levels)\n"
    "usage: /logging?group=<group_name>:<level> (change group of loggers)\n"
    "levels: " + "".join(level + " " for level in LEVELS) + "\n"
)


def logging(call):
    levels = call.server.logLevels
    items = call.queryItems

    def error(message):
        return AdminResponse(400, "error: %s\n\n%s%s" % (message, _LOGGING_USAGE, levels.text()))

    if not items:
        return AdminResponse(200, levels.text())
    if len(items) > 1:
        return error("invalid number of parameters")
    key, value = items[0]
    if key == "group":
        return error("group parameter requires fine-grain logging to be enabled")
    if key == "level":
        if value == "":
            return AdminResponse(200, levels.text())
        if value not in LEVELS:
            return error("unknown logger level")
        levels.setAll(value)
        call.admin.log.info("change all log levels: level='{newLevel}'", newLevel=value)
        return AdminResponse(200, levels.text())
    if key == "paths":
        pairs = []
        for item in value.split(","):
            name, _, level = item.partition(":")
            if not name or not level:
                return error("empty logger name or empty logger level")
            pairs.append((name, level))
    else:
        pairs = [(key, value)]
    for name, level in pairs:
        if level not in LEVELS:
            return error("unknown logger level")
        if name not in levels.names:
            return error("unknown logger name")
    for name, level in pairs:
        try:
            levels.set(name, level)
        except (UnknownLogger, UnknownLogLevel):
            return error("unknown logger name")
    return AdminResponse(200, levels.text())


# Server state.

def healthcheckFail(call):
    call.server.failHealthcheck()
    return _ok()


def healthcheckOk(call):
    call.server.passHealthcheck()
    return _ok()


def drainListeners(call):
    q = call.query
    call.server.drainListeners(graceful="graceful" in q, inboundOnly="inboundonly" in q,
                               skipExit="skip_exit" in q)
    return _ok()


def reopenLogs(call):
    call.server.accessLogManager.reopen()
    return _ok()


def quitquitquit(call):
    call.admin.log.info("shutting down from admin handler")
    # After this response is written: the reactor runs the call once the
    # current request is finished.
    call.admin.reactor.callLater(0, call.server.shutdown)
    return _ok()


# Memory and profiling: a Python process has none of tcmalloc's knobs.

def _residentBytes():
    try:
        with open("/proc/self/statm") as f:
            fields = f.read().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE"), int(fields[0]) * os.sysconf(
            "SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import resource
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            rss = rss if sys.platform == "darwin" else rss * 1024
            return rss, rss
        except Exception:
            return 0, 0


def memory(call):
    resident, size = _residentBytes()
    return AdminResponse(200, _dumps.dumpJson({
        "allocated": str(resident),
        "heap_size": str(size),
        "pageheap_unmapped": "0",
        "pageheap_free": "0",
        "total_thread_cache": "0",
        "total_physical_bytes": str(resident),
    }), JSON)


def memoryTcmalloc(call):
    resident, size = _residentBytes()
    return AdminResponse(200, "txenvoy runs on Python; there is no TCMalloc.\n"
                              "resident: %d bytes\nvirtual: %d bytes\n" % (resident, size),
                         "text/plain")


def contention(call):
    return AdminResponse(200, "Mutex contention tracing is not enabled. To enable, run Envoy "
                              "with flag --enable-mutex-tracing.")


def _profiler(label):
    def handler(call):
        enable = call.query.get("enable")
        if enable not in ("y", "n"):
            return AdminResponse(400, "?enable=<y|n>\n")
        return AdminResponse(501, "The current build does not support %s profiler\n" % (label,))
    return handler


cpuProfiler = _profiler("cpu")
heapProfiler = _profiler("heap")
allocProfiler = _profiler("allocation")


def heapDump(call):
    return AdminResponse(501, "The current build does not support heap dumps\n")


HANDLERS = {
    "/": home,
    "/allocprofiler": allocProfiler,
    "/certs": certs,
    "/clusters": clusters,
    "/config_dump": configDump,
    "/contention": contention,
    "/cpuprofiler": cpuProfiler,
    "/drain_listeners": drainListeners,
    "/healthcheck/fail": healthcheckFail,
    "/healthcheck/ok": healthcheckOk,
    "/heap_dump": heapDump,
    "/heapprofiler": heapProfiler,
    "/help": help,
    "/hot_restart_version": hotRestartVersion,
    "/init_dump": initDump,
    "/listeners": listeners,
    "/logging": logging,
    "/memory": memory,
    "/memory/tcmalloc": memoryTcmalloc,
    "/peak_heap_dump": heapDump,
    "/quitquitquit": quitquitquit,
    "/ready": ready,
    "/reopen_logs": reopenLogs,
    "/reset_counters": resetCounters,
    "/runtime": runtime,
    "/runtime_modify": runtimeModify,
    "/server_info": serverInfo,
    "/stats": stats,
    "/stats/prometheus": statsPrometheus,
    "/stats/recentlookups": recentLookups,
    "/stats/recentlookups/clear": recentLookupsClear,
    "/stats/recentlookups/disable": recentLookupsDisable,
    "/stats/recentlookups/enable": recentLookupsEnable,
}


def wallTime():
    """The wall clock (replaced in tests)."""
    return time.time()
