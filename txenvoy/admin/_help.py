# -*- test-case-name: tests.admin.test_admin -*-
"""
The admin's table of paths (Envoy 1.40's, in its order), from which
C{/help}, the 404 body and the C{/} home page are printed.
"""

from html import escape


class Endpoint:
    """
    One admin path.

    @ivar path: C{"/stats"}.
    @ivar help: the one-line description.
    @ivar mutatesState: only C{POST} is allowed.
    @ivar params: C{((name, help, kind, choices), ...)}; C{kind} is
        C{"text"}, C{"flag"} or C{"choice"}.
    """

    def __init__(self, path, help, mutatesState=False, params=()):
        self.path = path
        self.help = help
        self.mutatesState = mutatesState
        self.params = tuple(params)


def _p(name, help, kind="text", choices=()):
    return (name, help, kind, tuple(choices))


_RE2 = "Regular expression (Google re2) for filtering "
_USED = "Only include stats that have been written by system since restart"

ENDPOINTS = (
    Endpoint("/", "Admin home page"),
    Endpoint("/allocprofiler", "enable/disable the allocation profiler (if supported)", True,
             [_p("enable", "enable/disable the allocation profiler", "choice", ("y", "n"))]),
    Endpoint("/certs", "print certs on machine"),
    Endpoint("/clusters", "upstream cluster status",
             params=[_p("filter", _RE2 + "clusters by name")]),
    Endpoint("/config_dump", "dump current Envoy configs", params=[
        _p("resource", "The resource to dump"),
        _p("mask", "The mask to apply. When both resource and mask are specified, the mask is "
                   "applied to every element in the desired repeated field so that only a "
                   "subset of fields are returned. The mask is parsed as a "
                   "Protobuf::FieldMask"),
        _p("name_regex", "Dump only the currently loaded configurations whose names match "
                         "the specified regex. Can be used with both resource and mask query "
                         "parameters."),
        _p("include_eds", "Dump currently loaded configuration including EDS. See the "
                          "response definition for more information", "flag"),
    ]),
    Endpoint("/contention", "dump current Envoy mutex contention stats (if enabled)"),
    Endpoint("/cpuprofiler", "enable/disable the CPU profiler", True,
             [_p("enable", "enables the CPU profiler", "choice", ("y", "n"))]),
    Endpoint("/drain_listeners", "drain listeners", True, [
        _p("graceful", "When draining listeners, enter a graceful drain period prior to "
                       "closing listeners. This behaviour and duration is configurable via "
                       "server options or CLI", "flag"),
        _p("skip_exit", "When draining listeners, drain the connections but never stop the "
                        "listeners. The graceful parameter has no effect when this is set, "
                        "since the drain period only delays stopping the listeners", "flag"),
        _p("inboundonly", "Drains all inbound listeners. traffic_direction field in "
                          "envoy_v3_api_msg_config.listener.v3.Listener is used to determine "
                          "whether a listener is inbound or outbound.", "flag"),
    ]),
    Endpoint("/healthcheck/fail", "cause the server to fail health checks", True),
    Endpoint("/healthcheck/ok", "cause the server to pass health checks", True),
    Endpoint("/heap_dump", "dump current Envoy heap (if supported)"),
    Endpoint("/heapprofiler", "enable/disable the heap profiler", True,
             [_p("enable", "enable/disable the heap profiler", "choice", ("y", "n"))]),
    Endpoint("/help", "print out list of admin commands"),
    Endpoint("/hot_restart_version", "print the hot restart compatibility version"),
    Endpoint("/init_dump", "dump current Envoy init manager information (experimental)",
             params=[_p("mask", "The desired component to dump unready targets. The mask is "
                                "parsed as a Protobuf::FieldMask. For example, get the unready "
                                "targets of all listeners with /init_dump?mask=listener`")]),
    Endpoint("/listeners", "print listener info",
             params=[_p("format", "File format to use", "choice", ("text", "json"))]),
    Endpoint("/logging", "query/change logging levels", True, [
        _p("paths", "Change multiple logging levels by setting to "
                    "<logger_name1>:<desired_level1>,<logger_name2>:<desired_level2>. If fine "
                    "grain logging is enabled, use __FILE__ or a glob experision as the logger "
                    "name. For example, source/common*:warning"),
        _p("group", "Change given logger group to desired level, set to "
                    "<logger_group_name>:<desired_level>. logger_group_name must be a logger "
                    "name."),
        _p("level", "desired logging level, this will change all loggers's level", "choice",
           ("", "trace", "debug", "info", "warning", "error", "critical", "off")),
    ]),
    Endpoint("/memory", "print current allocation/heap usage"),
    Endpoint("/memory/tcmalloc", "print TCMalloc stats"),
    Endpoint("/peak_heap_dump", "dump peak Envoy heap (if supported)"),
    Endpoint("/quitquitquit", "exit the server", True),
    Endpoint("/ready", "print server state, return 200 if LIVE, otherwise return 503"),
    Endpoint("/reopen_logs", "reopen access logs", True),
    Endpoint("/reset_counters", "reset all counters to zero", True),
    Endpoint("/runtime", "print runtime values"),
    Endpoint("/runtime_modify",
             "Adds or modifies runtime values as passed in query parameters. To delete a "
             "previously added key, use an empty string as the value. Note that deletion only "
             "applies to overrides added via this endpoint; values loaded from disk can be "
             "modified via override but not deleted. E.g. ?key1=value1&key2=value2...", True),
    Endpoint("/server_info", "print server version/status information"),
    Endpoint("/stats", "print server stats", params=[
        _p("usedonly", _USED, "flag"),
        _p("filter", _RE2 + "stats"),
        _p("invert_filter", "Invert the filter regex", "flag"),
        _p("format", "Format to use", "choice", ("html", "active-html", "text", "json")),
        _p("type", "Stat types to include.", "choice",
           ("All", "Counters", "Histograms", "Gauges", "TextReadouts")),
        _p("histogram_buckets", "Histogram bucket display mode", "choice",
           ("cumulative", "disjoint", "detailed", "summary")),
    ]),
    Endpoint("/stats/prometheus", "print server stats in prometheus format", params=[
        _p("usedonly", _USED, "flag"),
        _p("text_readouts", "Render text_readouts as new gaugues with value 0 (increases "
                            "Prometheus data size)", "flag"),
        _p("filter", _RE2 + "stats"),
        _p("invert_filter", "Invert the filter regex", "flag"),
        _p("histogram_buckets", "Histogram bucket display mode", "choice",
           ("cumulative", "summary")),
    ]),
    Endpoint("/stats/recentlookups", "Show recent stat-name lookups"),
    Endpoint("/stats/recentlookups/clear", "clear list of stat-name lookups and counter", True),
    Endpoint("/stats/recentlookups/disable",
             "disable recording of reset stat-name lookup names", True),
    Endpoint("/stats/recentlookups/enable",
             "enable recording of reset stat-name lookup names", True),
)

ENDPOINTS_BY_PATH = {e.path: e for e in ENDPOINTS}


def helpText():
    """C{/help}: Envoy's list of admin commands."""
    lines = ["admin commands are:"]
    for e in ENDPOINTS:
        lines.append("  %s%s: %s" % (e.path, " (POST)" if e.mutatesState else "", e.help))
        for name, help, kind, choices in e.params:
            if kind == "choice":
                help = "%s; One of (%s)" % (help, ", ".join(choices))
            lines.append("      %s: %s" % (name, help))
    return "".join(line + "\n" for line in lines)


def homePage():
    """
    C{/}: an HTML index of the admin paths, each a link or a form, laid
    out as Envoy's: a spacer row before each command, every other command
    shaded, each parameter on its own row bound to the command's form
    (C{param-<index>-<path>-<name>}, the index counting C{/} as 1).
    """
    rows = []
    for i, e in enumerate(ENDPOINTS):
        if e.path == "/":
            continue
        name = escape(e.path[1:], quote=True)
        formId = name
        paramPrefix = "param-%d-%s-" % (i + 1, escape(e.path[1:].replace("/", "-"), quote=True))
        shade = " class='gray'" if i % 2 == 0 else ""
        if e.mutatesState or e.params:
            method = "post" if e.mutatesState else "get"
            button = "<button>%s</button>" % (name,) if e.mutatesState else \
                "<button class='button-as-link'>%s</button>" % (name,)
            cell = ("<form action='%s' method='%s' id='%s' class='home-form'>\n    %s\n"
                    "  </form>" % (name, method, formId, button))
        else:
            cell = "<a href='%s'>%s</a>" % (name, name)
        rows.append("<tr class='vert-space'><td></td><td></td></tr>\n")
        rows.append("<tr%s>\n  <td class='home-data'>%s</td>\n  <td class='home-data'>%s</td>\n"
                    "</tr>\n" % (shade, cell, escape(e.help)))
        for pname, phelp, kind, choices in e.params:
            inputId = paramPrefix + escape(pname, quote=True)
            if kind == "choice":
                field = "<select name='%s' id='%s' form='%s'>%s</select>" % (
                    escape(pname, quote=True), inputId, formId, "".join(
                        "<option value='%s'>%s</option>" % (escape(c, quote=True), escape(c))
                        for c in choices))
            elif kind == "flag":
                field = "<input type='checkbox' name='%s' id='%s' form='%s'>" % (
                    escape(pname, quote=True), inputId, formId)
            else:
                field = "<input type='text' name='%s' id='%s' form='%s' />" % (
                    escape(pname, quote=True), inputId, formId)
            rows.append("<tr%s>\n  <td class='option'>%s</td>\n  <td class='home-data'>"
                        "<label for='%s'>%s</label></td>\n</tr>\n" % (
                            shade, field, inputId, escape(phelp)))
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n  <title>Envoy Admin</title>\n"
        "<style>\n.home-table { font-family: sans-serif; border-collapse: collapse; }\n"
        ".home-data { text-align: left; padding: 4px; }\n"
        ".home-form { margin-bottom: 0; }\n"
        ".button-as-link { background: none!important; border: none; padding: 0!important; "
        "font-family: sans-serif; font-size: medium; color: #069; text-decoration: underline; "
        "cursor: pointer; }\n"
        ".gray { background-color: #dddddd; }\n"
        ".vert-space { height: 4px; }\n"
        ".option { padding: 4px 4px 4px 20px; text-align: right; }\n</style>\n</head>\n"
        "<body>\n  <table class='home-table'>\n    <thead>\n      <tr>\n"
        "        <th class='home-data'>Command</th>\n"
        "        <th class='home-data'>Description</th>\n      </tr>\n    </thead>\n"
        "    <tbody>\n" + "".join(rows) + "    </tbody>\n  </table>\n</body>\n</html>\n")
