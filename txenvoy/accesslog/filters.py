# -*- test-case-name: tests.accesslog.test_loggers -*-
"""
The C{access_log} entries of tcp_proxy, the HTTP connection manager,
listeners and admin: an access logger extension plus an optional
C{filter} (Envoy's C{AccessLog::FilterFactory}).

Filters are compiled once into plain predicates
C{(streamInfo, requestHeaders, responseHeaders) -> bool}.

Supported: C{status_code_filter}, C{duration_filter},
C{not_health_check_filter}, C{response_flag_filter}, C{and_filter},
C{or_filter}. The comparison value is the C{default_value}; runtime
overrides of its C{runtime_key} are not read. Other filters are rejected
as unsupported.
"""

from zope.interface import implementer

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.registry import Category
from txenvoy.interfaces import IAccessLogger

#: The response flags a C{response_flag_filter} may name (Envoy 1.40).
VALID_RESPONSE_FLAGS = frozenset(
    "LH UH UT LR UR UF UC UO NR DI FI RL UAEX RLSE DC URX SI IH DPE UMSDR "
    "RFCF NFCF DT UPE NC OM DF DO DR UDO".split()
)

_OPS = {
    0: lambda a, b: a == b,  # EQ
    1: lambda a, b: a >= b,  # GE
    2: lambda a, b: a <= b,  # LE
    3: lambda a, b: a != b,  # NE
}


@implementer(IAccessLogger)
class FilteredAccessLogger:
    """
    Passes a log on to C{logger} only when C{predicate} accepts it.

    @ivar logger: the wrapped L{IAccessLogger}.
    """

    def __init__(self, predicate, logger):
        self._predicate = predicate
        self.logger = logger

    def log(self, streamInfo, requestHeaders=None, responseHeaders=None,
            responseTrailers=None):
        """Log through the wrapped logger when the filter accepts."""
        if self._predicate(streamInfo, requestHeaders, responseHeaders):
            self.logger.log(streamInfo, requestHeaders, responseHeaders, responseTrailers)


def _comparison(comparison, path):
    if not comparison.HasField("value"):
        raise ConfigError("%s.value: value is required" % (path,))
    compare = _OPS.get(comparison.op)
    if compare is None:
        raise ConfigError("%s.op: value must be one of the defined enum values" % (path,))
    return compare, comparison.value.default_value


def _durationMs(streamInfo):
    return int(streamInfo.duration() * 1000 + 1e-6)


def compileFilter(message, path):
    """
    Compile an C{envoy.config.accesslog.v3.AccessLogFilter}.

    @param path: its field path, for messages.
    @return: a predicate C{(streamInfo, requestHeaders, responseHeaders)}.
    @raise UnsupportedField: for a filter type txenvoy does not implement.
    """
    which = message.WhichOneof("filter_specifier")
    sub = "%s.%s" % (path, which)
    if which is None:
        raise ConfigError("%s: exactly one filter must be set" % (path,))
    if which in ("status_code_filter", "duration_filter"):
        spec = getattr(message, which)
        if not spec.HasField("comparison"):
            raise ConfigError("%s.comparison: value is required" % (sub,))
        compare, value = _comparison(spec.comparison, sub + ".comparison")
        if which == "status_code_filter":
            # Envoy compares 0 when no status was sent (TCP, resets).
            return lambda si, rq, rs: compare(si.responseCode or 0, value)
        return lambda si, rq, rs: compare(_durationMs(si), value)
    if which == "not_health_check_filter":
        return lambda si, rq, rs: not getattr(si, "healthCheck", False)
    if which == "response_flag_filter":
        flags = list(message.response_flag_filter.flags)
        for i, flag in enumerate(flags):
            if flag not in VALID_RESPONSE_FLAGS:
                raise ConfigError(
                    "%s.flags[%d]: value must be in list %s"
                    % (sub, i, sorted(VALID_RESPONSE_FLAGS)))
        if not flags:
            return lambda si, rq, rs: si.responseFlags() != "-"
        wanted = frozenset(flags)
        return lambda si, rq, rs: any(si.hasResponseFlag(f) for f in wanted)
    if which in ("and_filter", "or_filter"):
        children = getattr(message, which).filters
        if len(children) < 2:
            raise ConfigError("%s.filters: value must contain at least 2 item(s)" % (sub,))
        predicates = tuple(
            compileFilter(child, "%s.filters[%d]" % (sub, i))
            for i, child in enumerate(children)
        )
        if which == "and_filter":
            return lambda si, rq, rs: all(p(si, rq, rs) for p in predicates)
        return lambda si, rq, rs: any(p(si, rq, rs) for p in predicates)
    raise UnsupportedField(sub, "access log filter")


def createAccessLog(accessLogProto, context, path):
    """
    Build one entry of an C{access_log} list
    (C{envoy.config.accesslog.v3.AccessLog}).

    @param context: a L{txenvoy.config.context.FactoryContext}.
    @param path: the entry's field path (C{...access_log[0]}).
    @return: an L{IAccessLogger}.
    @raise ConfigError: for a bad or unsupported logger or filter.
    """
    predicate = None
    if accessLogProto.HasField("filter"):
        # The filter is compiled first, so a bad one opens no file.
        predicate = compileFilter(accessLogProto.filter, path + ".filter")
    logger = context.createExtension(Category.ACCESS_LOGGER, accessLogProto, path)
    if predicate is None:
        return logger
    return FilteredAccessLogger(predicate, logger)


def createAccessLogs(accessLogs, context, path):
    """
    Build a whole C{access_log} list.

    @param path: the list's field path (C{...access_log}).
    @return: a list of L{IAccessLogger}.
    """
    return [
        createAccessLog(entry, context, "%s[%d]" % (path, i))
        for i, entry in enumerate(accessLogs)
    ]
