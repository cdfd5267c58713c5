# -*- test-case-name: tests.extensions.filters.http.test_header_to_metadata -*-
"""
C{envoy.filters.http.header_to_metadata}: copy request or response header
(or cookie) values into the stream's dynamic metadata, where load
balancers, access logs and later filters read them.

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
C{tests/extensions/filters/http/test_header_to_metadata.py}):

 - each rule reads its header (every value, joined with C{,}) or cookie;
   C{remove} removes a present header;
 - with the header present, C{on_header_present} writes C{value} if set,
   else the header's value (after C{regex_value_rewrite}); with it missing,
   C{on_header_missing} writes its C{value};
 - an empty value writes nothing; a value of 8 KiB or more neither;
   C{BASE64} values are decoded first (padding optional); C{NUMBER} values
   must parse as a number, C{PROTOBUF_VALUE} ones as a serialized
   C{google.protobuf.Value};
 - the namespace is C{metadata_namespace}, or
   C{envoy.filters.http.header_to_metadata}; keys are merged into what the
   namespace already holds;
 - with C{stat_prefix} the counters are
   C{http_filter_name.<stat_prefix>.request_rules_processed} and friends
   (no C{http.} in front);
 - a C{typed_per_filter_config} C{Config} replaces the filter's rules for
   the route.

Metadata lands in C{callbacks.streamInfo.dynamicMetadata}, a dict of dicts:
C{{namespace: {key: value}}}, values as Python values (C{str}, C{float},
or what the C{Value} holds).
"""

import base64
import binascii
import re

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError
from zope.interface import implementer

from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension
from txenvoy.http.hash_policy import cookieValue
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.router.matcher import HeaderMatcher
from txenvoy.regex import compileRegexRewrite
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter

from txenvoy.http.filter_config import RouteSpecificConfigs, WorkerStats

__all__ = ["HeaderToMetadataConfig", "Rule", "createHeaderToMetadata"]

_NAME = "envoy.filters.http.header_to_metadata"
_CONFIG = "envoy.extensions.filters.http.header_to_metadata.v3.Config"

_Config = header_to_metadata_pb2.Config
STRING, NUMBER, PROTOBUF_VALUE = _Config.STRING, _Config.NUMBER, _Config.PROTOBUF_VALUE
BASE64 = _Config.BASE64

#: Envoy's C{MAX_HEADER_VALUE_LEN}.
MAX_HEADER_VALUE_LEN = 8 * 1024

_COUNTERS = ("request_rules_processed", "response_rules_processed", "request_metadata_added",
             "response_metadata_added", "request_header_not_found",
             "response_header_not_found", "base64_decode_failed", "header_value_too_long",
             "regex_substitution_failed")

# absl::SimpleAtod, after StringUtil::trim.
_DOUBLE = re.compile(r"\A[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)\Z", re.I)


def _parseNumber(value):
    text = value.decode("latin-1").strip(" \t\n\v\f\r")
    if not _DOUBLE.match(text):
        return None
    return float(text)


def _decodeBase64(value):
    # Envoy's Base64::decodeWithoutPadding: padding optional, an empty
    # result means failure.
    value = value.rstrip(b"=")
    value += b"=" * (-len(value) % 4)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


class _KeyValue:
    """A compiled C{KeyValuePair}."""

    __slots__ = ("namespace", "key", "value", "rewrite", "type", "base64")

    def __init__(self, message, path):
        checkFields(message, ("metadata_namespace", "key", "value", "regex_value_rewrite", "type",
                              "encode"), path)
        if not message.key:
            raise ConfigError("%s.key: Proto constraint validation failed (KeyValuePair"
                              "ValidationError.Key: value length must be at least 1 characters)"
                              % (path,))
        self.namespace = message.metadata_namespace or _NAME
        self.key = message.key
        self.value = message.value.encode("utf-8")
        self.rewrite = None
        if message.HasField("regex_value_rewrite"):
            self.rewrite = compileRegexRewrite(message.regex_value_rewrite,
                                               path + ".regex_value_rewrite")
        self.type = message.type
        self.base64 = message.encode == BASE64


class Rule:
    """
    A compiled rule.

    @ivar header: the lower-cased header name (C{bytes}), or C{None}.
    @ivar cookie: the cookie name (C{bytes}), or C{None}.
    """

    __slots__ = ("header", "cookie", "remove", "present", "missing", "_reader")

    def __init__(self, message, path):
        checkFields(message, ("header", "cookie", "on_header_present", "on_header_missing",
                              "remove"), path)
        if message.cookie and message.header:
            raise ConfigError("%s: Cannot specify both header and cookie in the same rule"
                              % (path,))
        if not message.header and not message.cookie:
            raise ConfigError("%s: One of Cookie or Header option needs to be specified"
                              % (path,))
        self.header = message.header.lower().encode("utf-8") if message.header else None
        self.cookie = message.cookie.encode("utf-8") if message.cookie else None
        what = ("header '%s'" % (message.header,) if message.header
                else "cookie '%s'" % (message.cookie,))
        if not message.HasField("on_header_present") and not message.HasField("on_header_missing"):
            raise ConfigError("%s: header to metadata filter: rule for %s has neither "
                              "`on_header_present` nor `on_header_missing` set" % (path, what))
        present = message.on_header_present
        if present.value and present.HasField("regex_value_rewrite"):
            raise ConfigError("%s: Cannot specify both value and regex_value_rewrite" % (path,))
        if message.cookie and message.remove:
            raise ConfigError("%s: Cannot specify remove for cookie" % (path,))
        if message.HasField("on_header_missing") and not message.on_header_missing.value:
            raise ConfigError("%s: Cannot specify on_header_missing rule with an empty value"
                              % (path,))
        self.remove = message.remove
        self.present = (_KeyValue(present, path + ".on_header_present")
                        if message.HasField("on_header_present") else None)
        self.missing = (_KeyValue(message.on_header_missing, path + ".on_header_missing")
                        if message.HasField("on_header_missing") else None)
        # Pseudo-headers (":path", "host"...) come from the request line.
        self._reader = None
        if self.header is not None and (self.header[:1] == b":" or self.header == b"host"):
            self._reader = HeaderMatcher(self.header, None, present=True)

    def extract(self, head):
        """
        The rule's value in a request or response head, or C{None} when
        it is missing; removes the header when asked.
        """
        entries = head.headers
        if self.cookie is not None:
            value = cookieValue(entries, self.cookie)
            return value or None
        reader = self._reader
        if reader is None:
            values = entries.getAll(self.header)
        else:
            values = reader.read(entries, getattr(head, "authority", None),
                                 getattr(head, "path", None), getattr(head, "method", None))
        if not values:
            return None
        value = values[0] if len(values) == 1 else b",".join(values)
        if self.remove:
            entries.remove(self.header)
        return value


class _RuleSet:
    """The rules of one config: the filter's or a route's."""

    def __init__(self, message, path, perRoute=False):
        checkFields(message, ("request_rules", "response_rules", "stat_prefix"), path)
        self.requestRules = tuple(Rule(r, "%s.request_rules[%d]" % (path, i))
                                  for i, r in enumerate(message.request_rules))
        self.responseRules = tuple(Rule(r, "%s.response_rules[%d]" % (path, i))
                                   for i, r in enumerate(message.response_rules))
        if perRoute and not self.requestRules and not self.responseRules:
            raise ConfigError("%s: header_to_metadata_filter: Per filter configs must at least "
                              "specify either request or response rules" % (path,))
        self.stats = None
        if message.stat_prefix:
            prefix = "http_filter_name.%s." % (message.stat_prefix,)
            self.stats = WorkerStats({name: prefix + name for name in _COUNTERS})


def _typed(value, kv):
    """The metadata value for C{value} (bytes), or C{None} when it does not parse."""
    kind = kv.type
    if kind == STRING:
        return value.decode("utf-8", "surrogateescape")
    if kind == NUMBER:
        return _parseNumber(value)
    if kind == PROTOBUF_VALUE:
        parsed = struct_pb2.Value()
        try:
            parsed.ParseFromString(value)
        except DecodeError:
            return None
        return json_format.MessageToDict(parsed)
    return None


def _apply(rules, head, callbacks, stats, request):
    """Run C{rules} over a head (Envoy's C{writeHeaderToMetadata})."""
    written = {}
    prefix = "request_" if request else "response_"
    for rule in rules:
        value = rule.extract(head)
        if stats is not None:
            getattr(stats, prefix + "rules_processed").inc()
        if value is not None:
            kv = rule.present
            if kv is None:
                continue
        else:
            kv = rule.missing
            if kv is None:
                continue
            if stats is not None:
                getattr(stats, prefix + "header_not_found").inc()
            value = b""
        if kv.value:
            value = kv.value
        elif kv.rewrite is not None and value:
            value = kv.rewrite(value)
            if not value and stats is not None:
                stats.regex_substitution_failed.inc()
        if not value:
            continue
        if len(value) >= MAX_HEADER_VALUE_LEN:
            if stats is not None:
                stats.header_value_too_long.inc()
            continue
        if kv.base64:
            value = _decodeBase64(value)
            if not value:
                if stats is not None:
                    stats.base64_decode_failed.inc()
                continue
        typed = _typed(value, kv)
        if typed is None:
            continue
        written.setdefault(kv.namespace, {})[kv.key] = typed
        if stats is not None:
            getattr(stats, prefix + "metadata_added").inc()
    if written:
        metadata = callbacks.streamInfo.dynamicMetadata
        for namespace, fields in written.items():
            existing = metadata.get(namespace)
            if existing is None:
                metadata[namespace] = fields
            else:
                existing.update(fields)


@implementer(IHttpFilterFactory)
class HeaderToMetadataConfig:
    """
    A compiled C{Config}; the filter factory.

    @ivar rules: the filter's own L{_RuleSet}.
    """

    terminal = False

    def __init__(self, rules):
        self.rules = rules
        # Which directions a filter takes part in: those of the filter's own
        # rules, or both when it has none (the routes bring them).
        self._routeRequest = self._routeResponse = False
        self.routeConfigs = RouteSpecificConfigs(_NAME, (_CONFIG,), self._compileRoute)
        self._pickClass()

    def _compileRoute(self, message):
        rules = _RuleSet(message, "typed_per_filter_config[%s]" % (_NAME,), perRoute=True)
        if rules.requestRules and not self._routeRequest:
            self._routeRequest = True
            self._pickClass()
        if rules.responseRules and not self._routeResponse:
            self._routeResponse = True
            self._pickClass()
        return rules

    def _pickClass(self):
        own = self.rules
        empty = not own.requestRules and not own.responseRules
        request = empty or bool(own.requestRules) or self._routeRequest
        response = empty or bool(own.responseRules) or self._routeResponse
        if request and response:
            self._filterClass = _BothFilter
        elif response:
            self._filterClass = _ResponseFilter
        else:
            self._filterClass = _RequestFilter

    def rulesFor(self, callbacks):
        """The rules for this request: its route's, or the filter's."""
        return self.routeConfigs.mostSpecific(callbacks) or self.rules

    def createFilter(self, callbacks):
        """@return: a filter for one request, in the directions that have rules."""
        return self._filterClass(self, callbacks)


@implementer(IStreamDecoderFilter)
class _RequestFilter(ConfiguredFilter):
    """Request rules only."""

    def decodeHeaders(self, headers, endStream):
        callbacks = self.callbacks
        rules = self.config.rulesFor(callbacks)
        if rules.requestRules:
            stats = rules.stats.forDispatcher(callbacks.dispatcher) if rules.stats else None
            _apply(rules.requestRules, headers, callbacks, stats, True)
        return FilterHeadersStatus.Continue


@implementer(IStreamEncoderFilter)
class _ResponseFilter(ConfiguredFilter):
    """Response rules only."""

    def encodeHeaders(self, headers, endStream):
        callbacks = self.callbacks
        rules = self.config.rulesFor(callbacks)
        if rules.responseRules:
            stats = rules.stats.forDispatcher(callbacks.dispatcher) if rules.stats else None
            _apply(rules.responseRules, headers, callbacks, stats, False)
        return FilterHeadersStatus.Continue


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class _BothFilter(_RequestFilter):
    """Request and response rules."""

    encodeHeaders = _ResponseFilter.encodeHeaders


@extension(Category.HTTP_FILTER, _CONFIG, _NAME)
def createHeaderToMetadata(message, context):
    """Compile a C{Config} message."""
    rules = _RuleSet(message, context.configPath)
    if rules.stats is not None:
        rules.stats.declare(context)
    return HeaderToMetadataConfig(rules)
