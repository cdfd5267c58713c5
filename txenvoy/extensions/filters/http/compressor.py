# -*- test-case-name: tests.extensions.filters.http.test_compressor -*-
"""
C{envoy.filters.http.compressor}: compress response bodies (and, when
configured, request bodies) with a compression library (C{gzip}, C{br},
C{zstd}; L{txenvoy.extensions.compression}).

Behaviour copied from Envoy 1.40 (C{CompressorFilter}; checked against the
binary, pinned in C{tests/extensions/filters/http/test_compressor.py} and
C{tests/e2e/test_compression.py}):

 - the request's C{accept-encoding} is read when the request comes; with
   C{remove_accept_encoding_header} it is then removed, so that the
   upstream does not compress (and compressor filters after this one see
   none);
 - a response is compressed when compression is enabled (the
   C{common_config.enabled} runtime flag, or the route's
   C{CompressorPerRoute}), it has a body, its C{content-length} (if any) is
   at least C{min_content_length} (30 by default), it is not an upgrade,
   its C{content-type} (if any) is in C{content_type} (Envoy's list of
   text types by default), C{cache-control} has no C{no-transform}, it has
   no C{etag} when C{disable_on_etag_header}, no C{content-encoding}, no
   compressing C{transfer-encoding}, its status is not in
   C{uncompressible_response_codes}, and the negotiation of
   C{accept-encoding} (q-values, C{identity}, C{*}, over every compressor
   filter of the chain, C{choose_first} breaking ties) picks this filter's
   encoding;
 - a compressed response loses C{content-length} and a strong C{etag},
   and gains C{content-encoding}; every compressible response (whatever
   the client accepts) gets C{Accept-Encoding} in C{vary};
 - C{request_direction_config} compresses request bodies by the same
   rules and sets C{content-encoding} on the request.

Stats, under C{http.<prefix>.compressor.<library name>.<library>.}:
C{[response.]compressed}, C{not_compressed}, C{content_length_too_small},
C{total_uncompressed_bytes}, C{total_compressed_bytes} (C{response.} only
with C{response_direction_config}), the same under C{request.}, and
C{no_accept_header}, C{header_identity}, C{header_compressor_used},
C{header_compressor_overshadowed}, C{header_wildcard},
C{header_not_valid}, C{not_compressed_etag}.

C{status_header_enabled} and a per-route C{compressor_library} are not
implemented and are refused with their path.
"""

from zope.interface import implementer

from envoy.extensions.filters.http.compressor.v3 import compressor_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, createExtension, extension
from txenvoy.http.filter import ConfiguredFilter, FilterDataStatus, FilterHeadersStatus
from txenvoy.http.filter_config import (
    RouteSpecificConfigs,
    WorkerStats,
    httpStatPrefix,
    snapshotSource,
)
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter

__all__ = ["CompressorConfig", "CompressorFilter", "createCompressor",
           "DEFAULT_CONTENT_TYPES", "RuntimeFlag", "findToken", "hasNoTransform"]

_NAME = "envoy.filters.http.compressor"
_COMPRESSOR = "envoy.extensions.filters.http.compressor.v3.Compressor"
_PER_ROUTE = "envoy.extensions.filters.http.compressor.v3.CompressorPerRoute"

#: Envoy's content types compressed when C{content_type} is empty.
DEFAULT_CONTENT_TYPES = frozenset([
    b"text/html", b"text/plain", b"text/css", b"application/javascript",
    b"application/x-javascript", b"text/javascript", b"text/x-javascript",
    b"text/ecmascript", b"text/js", b"text/jscript", b"text/x-js", b"application/ecmascript",
    b"application/x-json", b"application/xml", b"application/json", b"image/svg+xml",
    b"text/xml", b"application/xhtml+xml", b"application/grpc-web",
    b"application/grpc-web+proto",
])

#: Transfer codings that mean the body is compressed already.
_COMPRESSING_CODINGS = frozenset([b"gzip", b"br", b"deflate", b"compress", b"zstd"])

_COMMON_STATS = ("compressed", "not_compressed", "total_uncompressed_bytes",
                 "total_compressed_bytes", "content_length_too_small")
_RESPONSE_STATS = ("no_accept_header", "header_identity", "header_compressor_used",
                   "header_compressor_overshadowed", "header_wildcard", "header_not_valid",
                   "not_compressed_etag")

_REGISTRY_KEY = "envoy.filters.http.compressor.compressors"
_DECISION_KEY = "envoy.filters.http.compressor.encoding_decision"

_IDENTITY = b"identity"
_WILDCARD = b"*"

# The header statistics of an encoding decision.
_USED, _IDENTITY_STAT, _WILDCARD_STAT, _NOT_VALID = range(4)


def findToken(value, token):
    """Whether the comma-separated C{value} holds C{token} (case-insensitive, trimmed)."""
    token = token.lower()
    return any(part.strip().lower() == token for part in value.split(b","))


def hasNoTransform(entries):
    """Whether C{cache-control} says C{no-transform}: the body must go as it is."""
    cacheControl = entries.get(b"cache-control")
    return cacheControl is not None and findToken(cacheControl, b"no-transform")


class RuntimeFlag:
    """
    An optional C{RuntimeFeatureFlag} as Envoy reads it: C{default_value}
    true when absent, the runtime's boolean at C{runtime_key} over it.
    """

    __slots__ = ("default", "runtimeKey")

    def __init__(self, message=None):
        if message is None:
            self.default, self.runtimeKey = True, ""
            return
        self.default = (message.default_value.value
                        if message.HasField("default_value") else True)
        self.runtimeKey = message.runtime_key

    def enabled(self, snapshot):
        """Whether the flag is on now."""
        if not self.runtimeKey:
            return self.default
        return snapshot().getBoolean(self.runtimeKey, self.default)


class _Direction:
    """
    One direction's C{CommonDirectionConfig} (Envoy's C{DirectionConfig})
    and its stats.
    """

    def __init__(self, flag, minLength, contentTypes, statPrefix, isSet=True):
        self.flag = flag
        self.minLength = minLength if minLength > 0 else 30
        self.contentTypes = (frozenset(t.lower().encode("latin-1") for t in contentTypes)
                             if contentTypes else DEFAULT_CONTENT_TYPES)
        self.isSet = isSet
        self.stats = WorkerStats({name: statPrefix + name for name in _COMMON_STATS})

    def isMinimumContentLength(self, entries, stats):
        length = entries.get(b"content-length")
        if length is None:
            return True
        length = length.strip()
        if length.isdigit() and int(length) >= self.minLength:
            return True
        stats.content_length_too_small.inc()
        return False

    def isContentTypeAllowed(self, entries):
        contentType = entries.get(b"content-type")
        if contentType is None:
            return True
        return contentType.split(b";", 1)[0].strip().lower() in self.contentTypes


def _direction(common, statPrefix, path, isSet=True, fallback=(0, (), None)):
    if common is None:
        minLength, types, flag = fallback
        if flag is None:
            flag = RuntimeFlag()
    else:
        checkFields(common, ("enabled", "min_content_length", "content_type"), path)
        minLength = common.min_content_length.value
        types = list(common.content_type)
        flag = RuntimeFlag(common.enabled if common.HasField("enabled") else None)
    return _Direction(flag, minLength, types, statPrefix, isSet)


class _PerRoute:
    """A compiled C{CompressorPerRoute}."""

    __slots__ = ("responseEnabled", "removeAcceptEncoding")

    def __init__(self, responseEnabled=None, removeAcceptEncoding=None):
        self.responseEnabled = responseEnabled
        self.removeAcceptEncoding = removeAcceptEncoding


def compilePerRoute(message):
    """Compile a C{CompressorPerRoute} (Envoy's C{CompressorPerRouteFilterConfig})."""
    path = "typed_per_filter_config[%s]" % (_NAME,)
    which = message.WhichOneof("override")
    if which == "disabled":
        return _PerRoute(responseEnabled=False if message.disabled else None)
    if which == "overrides":
        overrides = message.overrides
        checkFields(overrides, ("response_direction_config",), path + ".overrides")
        if not overrides.HasField("response_direction_config"):
            return _PerRoute()
        response = overrides.response_direction_config
        remove = None
        if response.HasField("remove_accept_encoding_header"):
            remove = response.remove_accept_encoding_header.value
        return _PerRoute(responseEnabled=True, removeAcceptEncoding=remove)
    raise ConfigError("%s: Proto constraint validation failed (CompressorPerRouteValidationError."
                      "Override: value is required)" % (path,))


@implementer(IHttpFilterFactory)
class CompressorConfig:
    """
    A compiled C{Compressor}; the filter factory.

    @ivar library: the L{txenvoy.interfaces.ICompressorFactory}.
    @ivar contentEncoding: its encoding, lower-case C{bytes}.
    """

    terminal = False

    def __init__(self, library, request, response, responseStats, disableOnEtag,
                 removeAcceptEncoding, uncompressible, chooseFirst, snapshot):
        self.library = library
        self.contentEncoding = library.contentEncoding.lower()
        self.request = request
        self.response = response
        self.responseStats = responseStats
        self.disableOnEtag = disableOnEtag
        self.removeAcceptEncoding = removeAcceptEncoding
        self.uncompressible = uncompressible
        self.chooseFirst = chooseFirst
        self.snapshot = snapshot
        self.routeConfigs = RouteSpecificConfigs(_NAME, (_PER_ROUTE,), compilePerRoute)

    def createFilter(self, callbacks):
        """@return: a L{CompressorFilter} for one request."""
        # Every compressor of the chain takes part in the choice of the
        # response's encoding (Envoy's CompressorRegistry filter state).
        state = callbacks.streamInfo.filterState
        registry = state.get(_REGISTRY_KEY)
        if registry is None:
            registry = state[_REGISTRY_KEY] = []
        registry.append(self)
        return CompressorFilter(self, callbacks)

    def declare(self, context):
        """Show every stat at zero from the start."""
        self.request.stats.declare(context)
        self.response.stats.declare(context)
        self.responseStats.declare(context)
        return self


def _isUpgrade(entries):
    connection = entries.get(b"connection")
    return (connection is not None and entries.get(b"upgrade") is not None
            and findToken(connection, b"upgrade"))


def _transferEncodingAllowed(entries, ownEncoding):
    te = entries.get(b"transfer-encoding")
    if te is None:
        return True
    for part in te.split(b","):
        coding = part.strip().lower()
        if coding in _COMPRESSING_CODINGS or coding == ownEncoding:
            return False
    return True


def _parseQ(text):
    # absl::SimpleAtof: a float, surrounding blanks allowed.
    try:
        return float(text.strip())
    except ValueError:
        return None


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class CompressorFilter(ConfiguredFilter):
    """The compressor filter of one request."""

    _acceptEncoding = None
    _requestCompressor = None
    _responseCompressor = None

    # The request.

    def decodeHeaders(self, headers, endStream):
        config = self.config
        entries = headers.headers
        acceptEncoding = entries.get(b"accept-encoding")
        if acceptEncoding is not None:
            self._acceptEncoding = acceptEncoding
        perRoute = config.routeConfigs.mostSpecific(self.callbacks)
        if self._responseEnabled(perRoute) and self._removeAcceptEncoding(perRoute):
            entries.remove(b"accept-encoding")
        request = config.request
        dispatcher = self.callbacks.dispatcher
        stats = request.stats.forDispatcher(dispatcher)
        if (not endStream and request.isSet and request.flag.enabled(config.snapshot)
                and headers.upgrade is None
                and request.isMinimumContentLength(entries, stats)
                and request.isContentTypeAllowed(entries)
                and entries.get(b"content-encoding") is None
                and _transferEncodingAllowed(entries, config.contentEncoding)):
            entries.remove(b"content-length")
            headers.contentLength = None
            entries.set(b"content-encoding", config.library.contentEncoding)
            stats.compressed.inc()
            self._requestCompressor = config.library.createCompressor()
        else:
            stats.not_compressed.inc()
        return FilterHeadersStatus.Continue

    def decodeData(self, data, endStream):
        compressor = self._requestCompressor
        if compressor is None:
            return FilterDataStatus.Continue
        return FilterDataStatus.Continue, self._compress(
            compressor, self.config.request, data, endStream)

    def decodeTrailers(self, trailers):
        compressor = self._requestCompressor
        if compressor is not None:
            self.callbacks.addDecodedData(
                self._compress(compressor, self.config.request, b"", True))
        return 0

    # The response.

    def encodeHeaders(self, headers, endStream):
        config = self.config
        response = config.response
        dispatcher = self.callbacks.dispatcher
        stats = response.stats.forDispatcher(dispatcher)
        entries = headers.headers
        perRoute = config.routeConfigs.mostSpecific(self.callbacks)
        bigEnough = (self._responseEnabled(perRoute)
                     and response.isMinimumContentLength(entries, stats))
        compressible = (bigEnough and not _isUpgrade(entries)
                        and response.isContentTypeAllowed(entries)
                        and not hasNoTransform(entries)
                        and self._etagAllowed(entries)
                        and entries.get(b"content-encoding") is None)
        if (not endStream and self._acceptEncodingAllowed(bigEnough, entries) and compressible
                and _transferEncodingAllowed(entries, config.contentEncoding)
                and headers.status not in config.uncompressible):
            etag = entries.get(b"etag")
            if etag is not None and len(etag) > 2 and etag[:2] not in (b"W/", b"w/"):
                entries.remove(b"etag")
            entries.remove(b"content-length")
            entries.set(b"content-encoding", config.library.contentEncoding)
            stats.compressed.inc()
            self._responseCompressor = config.library.createCompressor()
        else:
            stats.not_compressed.inc()
        if compressible:
            # A cache in front must know the body depends on accept-encoding,
            # whatever this client accepted.
            vary = entries.get(b"vary")
            if vary is None:
                entries.add(b"vary", b"Accept-Encoding")
            elif not findToken(vary, b"accept-encoding"):
                entries.set(b"vary", vary + b", Accept-Encoding")
        return FilterHeadersStatus.Continue

    def encodeData(self, data, endStream):
        compressor = self._responseCompressor
        if compressor is None:
            return FilterDataStatus.Continue
        return FilterDataStatus.Continue, self._compress(
            compressor, self.config.response, data, endStream)

    def encodeTrailers(self, trailers):
        compressor = self._responseCompressor
        if compressor is not None:
            self.callbacks.addEncodedData(
                self._compress(compressor, self.config.response, b"", True))
        return 0

    # Decisions.

    def _compress(self, compressor, direction, data, finish):
        stats = direction.stats.forDispatcher(self.callbacks.dispatcher)
        stats.total_uncompressed_bytes.inc(len(data))
        out = compressor.compress(data, finish)
        stats.total_compressed_bytes.inc(len(out))
        return out

    def _responseEnabled(self, perRoute):
        if perRoute is not None and perRoute.responseEnabled is not None:
            return perRoute.responseEnabled
        return self.config.response.flag.enabled(self.config.snapshot)

    def _removeAcceptEncoding(self, perRoute):
        if perRoute is not None and perRoute.removeAcceptEncoding is not None:
            return perRoute.removeAcceptEncoding
        return self.config.removeAcceptEncoding

    def _etagAllowed(self, entries):
        config = self.config
        if config.disableOnEtag and entries.get(b"etag") is not None:
            config.responseStats.forDispatcher(self.callbacks.dispatcher) \
                .not_compressed_etag.inc()
            return False
        return True

    def _acceptEncodingAllowed(self, maybeCompress, entries):
        """Envoy's C{isAcceptEncodingAllowed}: one decision per stream, cached."""
        if not maybeCompress:
            return False
        config = self.config
        stats = config.responseStats.forDispatcher(self.callbacks.dispatcher)
        if self._acceptEncoding is None:
            stats.no_accept_header.inc()
            return False
        state = self.callbacks.streamInfo.filterState
        decision = state.get(_DECISION_KEY)
        if decision is None:
            decision = state[_DECISION_KEY] = self._chooseEncoding(entries)
        encoding, stat = decision
        chosen = encoding == config.contentEncoding
        if stat == _USED:
            if chosen:
                stats.header_compressor_used.inc()
            else:
                stats.header_compressor_overshadowed.inc()
        elif stat == _IDENTITY_STAT:
            stats.header_identity.inc()
        elif stat == _WILDCARD_STAT:
            stats.header_wildcard.inc()
        else:
            stats.header_not_valid.inc()
        return chosen

    def _chooseEncoding(self, entries):
        """Envoy's C{chooseEncoding}: C{(encoding, headerStat)}."""
        contentType = entries.get(b"content-type")
        if contentType is not None:
            contentType = contentType.split(b";", 1)[0].strip().lower()
        allowed = {}
        for other in self.callbacks.streamInfo.filterState.get(_REGISTRY_KEY, ()):
            if contentType and contentType not in other.response.contentTypes:
                continue
            if other.contentEncoding not in allowed:
                allowed[other.contentEncoding] = (len(allowed), other.chooseFirst)
        pairs = []
        for token in self._acceptEncoding.split(b","):
            if not token.strip():
                continue
            name, semi, params = token.partition(b";")
            q = 1.0
            if semi:
                key, eq, value = params.partition(b"=")
                if eq and key.strip().lower() == b"q":
                    q = _parseQ(value)
                    if q is None:
                        continue
            # Envoy compares codings as written (case-sensitively).
            name = name.strip()
            pairs.append((name, q))
            if not q:
                allowed.pop(name, None)
        if not pairs or not allowed:
            return _IDENTITY, _NOT_VALID
        choice, best = _IDENTITY, 0.0
        for name, q in pairs:
            if name in allowed or name == _IDENTITY or name == _WILDCARD:
                entry = allowed.get(name)
                if q > best or (q == best and entry is not None and entry[1]):
                    choice, best = name, q
        if not best:
            return _IDENTITY, _NOT_VALID
        if choice == _IDENTITY:
            return _IDENTITY, _IDENTITY_STAT
        if choice == _WILDCARD:
            first = min(allowed.items(), key=lambda item: item[1][0])
            return first[0], _WILDCARD_STAT
        return choice, _USED


_FIELDS = ("content_length", "content_type", "disable_on_etag_header",
           "remove_accept_encoding_header", "runtime_enabled", "compressor_library",
           "request_direction_config", "response_direction_config", "choose_first")


@extension(Category.HTTP_FILTER, _COMPRESSOR, _NAME, fields=_FIELDS)
def createCompressor(message, context):
    """Compile a C{Compressor} message."""
    path = context.path + ".typed_config"
    if not message.HasField("compressor_library"):
        raise ConfigError("%s: Proto constraint validation failed (CompressorValidationError."
                          "CompressorLibrary: value is required)" % (path,))
    libraryEntry = message.compressor_library
    library = createExtension(Category.COMPRESSOR, libraryEntry, context,
                              path + ".compressor_library")
    prefix = "%scompressor.%s.%s." % (httpStatPrefix(context), libraryEntry.name,
                                      library.statsPrefix)
    snapshot = snapshotSource(context)
    requestCommon = None
    if message.HasField("request_direction_config"):
        checkFields(message.request_direction_config, ("common_config",),
                    path + ".request_direction_config")
        requestCommon = message.request_direction_config.common_config
    request = _direction(requestCommon, prefix + "request.",
                         path + ".request_direction_config.common_config",
                         isSet=message.HasField("request_direction_config"))
    if message.HasField("response_direction_config"):
        rdc = message.response_direction_config
        checkFields(rdc, ("common_config", "disable_on_etag_header",
                          "remove_accept_encoding_header", "uncompressible_response_codes"),
                    path + ".response_direction_config")
        response = _direction(rdc.common_config if rdc.HasField("common_config") else None,
                              prefix + "response.",
                              path + ".response_direction_config.common_config")
        disableOnEtag = rdc.disable_on_etag_header
        removeAcceptEncoding = rdc.remove_accept_encoding_header
        uncompressible = frozenset(rdc.uncompressible_response_codes)
    else:
        # The deprecated top-level fields (Envoy's commonConfig()).
        response = _direction(None, prefix, path, fallback=(
            message.content_length.value, list(message.content_type),
            RuntimeFlag(message.runtime_enabled
                        if message.HasField("runtime_enabled") else None)))
        disableOnEtag = message.disable_on_etag_header
        removeAcceptEncoding = message.remove_accept_encoding_header
        uncompressible = frozenset()
    responseStats = WorkerStats({name: prefix + name for name in _RESPONSE_STATS})
    config = CompressorConfig(library, request, response, responseStats, disableOnEtag,
                              removeAcceptEncoding, uncompressible, message.choose_first,
                              snapshot)
    return config.declare(context)
