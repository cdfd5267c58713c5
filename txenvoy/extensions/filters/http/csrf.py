# -*- test-case-name: tests.extensions.filters.http.test_small_filters -*-
"""
C{envoy.filters.http.csrf}: refuse state-changing requests (C{POST},
C{PUT}, C{DELETE}, C{PATCH}) whose origin is not the host they are sent to.

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
C{tests/extensions/filters/http/test_small_filters.py} and
C{tests/e2e/test_small_filters.py}):

 - the source origin is the host (and port) of C{origin}, else of
   C{referer}; the scheme does not count; none (or C{origin: null}) counts
   in C{missing_source_origin} and is refused;
 - it is valid when it is the request's host, or matches one of
   C{additional_origins}; otherwise C{request_invalid};
 - a refusal is C{403 Invalid origin}, details C{csrf_origin_mismatch},
   while C{filter_enabled} holds; with only C{shadow_enabled} the stats
   are counted and the request goes on;
 - a C{CsrfPolicy} in C{typed_per_filter_config} replaces the filter's.

Stats: C{http.<prefix>.csrf.missing_source_origin}, C{request_invalid},
C{request_valid}.
"""

from zope.interface import implementer

from envoy.extensions.filters.http.csrf.v3 import csrf_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.http.filter_config import (
    RouteSpecificConfigs,
    WorkerStats,
    httpStatPrefix,
    snapshotSource,
)
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter
from txenvoy.router.matcher import compileStringMatcher
from txenvoy.runtime import RuntimeFractionalPercent

__all__ = ["CsrfConfig", "CsrfFilter", "CsrfPolicy", "createCsrf"]

_NAME = "envoy.filters.http.csrf"
_CSRF = "envoy.extensions.filters.http.csrf.v3.CsrfPolicy"
_MODIFYING = frozenset([b"POST", b"PUT", b"DELETE", b"PATCH"])


class CsrfPolicy:
    """A compiled C{CsrfPolicy}."""

    def __init__(self, message, path):
        checkFields(message, ("filter_enabled", "shadow_enabled", "additional_origins"), path)
        if not message.HasField("filter_enabled"):
            raise ConfigError("%s: Proto constraint validation failed (CsrfPolicyValidationError."
                              "FilterEnabled: value is required)" % (path,))
        self.enabled = RuntimeFractionalPercent(message.filter_enabled)
        self.shadow = (RuntimeFractionalPercent(message.shadow_enabled)
                       if message.HasField("shadow_enabled") else None)
        self.additional = tuple(
            compileStringMatcher(m, "%s.additional_origins[%d]" % (path, i))
            for i, m in enumerate(message.additional_origins))


def _hostOf(url):
    """The host and port of an origin or referer URL (Envoy's hostAndPort)."""
    scheme, sep, rest = url.partition(b"://")
    if not sep:
        return b""
    return rest.split(b"/", 1)[0].split(b"?", 1)[0]


@implementer(IHttpFilterFactory)
class CsrfConfig:
    """The filter factory."""

    terminal = False

    def __init__(self, policy, statPrefix, snapshot):
        self.policy = policy
        self.snapshot = snapshot
        self.stats = WorkerStats({name: statPrefix + name for name in (
            "missing_source_origin", "request_invalid", "request_valid")})
        self.routeConfigs = RouteSpecificConfigs(
            _NAME, (_CSRF,), lambda m: CsrfPolicy(m, "typed_per_filter_config[%s]" % (_NAME,)))

    def createFilter(self, callbacks):
        """@return: a L{CsrfFilter}."""
        return CsrfFilter(self, callbacks)


@implementer(IStreamDecoderFilter)
class CsrfFilter(ConfiguredFilter):
    """The CSRF check of one request."""

    def decodeHeaders(self, headers, endStream):
        if headers.method not in _MODIFYING:
            return FilterHeadersStatus.Continue
        config = self.config
        policy = config.routeConfigs.mostSpecific(self.callbacks) or config.policy
        snapshot = config.snapshot()
        enabled = policy.enabled.enabled(snapshot)
        if not enabled and not (policy.shadow is not None and policy.shadow.enabled(snapshot)):
            return FilterHeadersStatus.Continue
        stats = config.stats.forDispatcher(self.callbacks.dispatcher)
        entries = headers.headers
        source = entries.get(b"origin")
        if source is None:
            source = entries.get(b"referer")
        source = _hostOf(source) if source is not None else b""
        if not source:
            stats.missing_source_origin.inc()
            valid = False
        else:
            valid = source == (headers.authority or b"") or any(
                match(source) for match in policy.additional)
            (stats.request_valid if valid else stats.request_invalid).inc()
        if valid or not enabled:
            return FilterHeadersStatus.Continue
        self.callbacks.sendLocalReply(403, b"Invalid origin", None, "csrf_origin_mismatch")
        return FilterHeadersStatus.StopIteration


@extension(Category.HTTP_FILTER, _CSRF, _NAME)
def createCsrf(message, context):
    """Compile a C{CsrfPolicy}."""
    config = CsrfConfig(CsrfPolicy(message, context.path + ".typed_config"),
                        httpStatPrefix(context) + "csrf.", snapshotSource(context))
    config.stats.declare(context)
    return config
