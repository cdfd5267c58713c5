# -*- test-case-name: tests.http.test_filter,tests.http.test_conn_manager -*-
"""
The HTTP filter API (Envoy's C{Http::StreamDecoderFilter},
C{StreamEncoderFilter} and their callbacks).

An HTTP filter extension registers a factory for its C{@type} in the
category L{txenvoy.config.registry.Category.HTTP_FILTER}; the factory
provides L{txenvoy.interfaces.IHttpFilterFactory} and is built once, when
the config loads. For every request the connection manager calls
C{factory.createFilter(callbacks)} with that filter's
L{IStreamFilterCallbacks} and gets back the filter for the stream::

    from zope.interface import implementer

    from txenvoy.config.registry import Category, extension
    from txenvoy.http.filter import FilterHeadersStatus, PassThroughFilter
    from txenvoy.interfaces import IHttpFilterFactory

    class AddHeader(PassThroughFilter):
        def decodeHeaders(self, headers, endStream):
            headers.headers.add(b"x-seen", b"1")
            return FilterHeadersStatus.Continue

    @implementer(IHttpFilterFactory)
    class AddHeaderFactory:
        terminal = False
        def createFilter(self, callbacks):
            return AddHeader(callbacks)

    @extension(Category.HTTP_FILTER, "my.pkg.v1.AddHeader")
    def create(message, context):
        return AddHeaderFactory()

A filter takes part in the request (decode) direction if it has
C{decodeHeaders}, and in the response (encode) direction if it has
C{encodeHeaders}; a L{PassThroughFilter} subclass that overrides only one
side is left out of the other, so it costs nothing there. Decoder filters
run in config order, encoder filters in reverse order, as in Envoy.

Request heads are L{txenvoy.http.headers.RequestHeaders} (C{method},
C{path}, C{authority} as attributes; other headers in C{.headers}, a
L{txenvoy.http.headers.HeaderMap} with lower-case C{bytes} names); response
heads are L{txenvoy.http.headers.ResponseHeaders} (C{status}, C{.headers}).
Bodies are C{bytes}.

Statuses (Envoy's meaning):

 - C{decodeHeaders}/C{encodeHeaders} return L{FilterHeadersStatus}:
   C{Continue}, or C{StopIteration} (later filters do not see the headers
   until the filter calls C{continueDecoding()} / C{continueEncoding()}; body
   data still reaches this filter, and a C{Continue} from its C{decodeData}
   releases the headers too), or C{StopAllIterationAndBuffer} (headers and
   body wait, body buffered, until C{continue...()}).
 - C{decodeData}/C{encodeData} return L{FilterDataStatus}: C{Continue},
   C{StopIterationAndBuffer} (keep this data and what follows for later
   filters until C{continue...()}), C{StopIterationAndWatermark} (the same),
   or C{StopIterationNoBuffer} (the filter took the data; nothing is
   passed on). A filter that changes the bytes (a compressor) returns
   C{(FilterDataStatus.Continue, replacement)}: C{replacement} goes on
   instead of C{data} (Envoy's filters rewrite the buffer in place; bytes
   are immutable here). From C{decodeTrailers} / C{encodeTrailers} a
   filter may pass last bytes on before the trailers with the callbacks'
   C{addDecodedData} / C{addEncodedData}.
 - C{decodeTrailers}/C{encodeTrailers} return L{FilterTrailersStatus}.

A filter may also have C{onDestroy()}, called once when the stream ends.
These methods are declared by L{txenvoy.interfaces.IStreamDecoderFilter},
L{txenvoy.interfaces.IStreamEncoderFilter} and
L{txenvoy.interfaces.IStreamFilterBase}; a filter that lacks
C{decodeTrailers}, C{encodeTrailers} or C{onDestroy} gets
L{PassThroughFilter}'s (L{filterMethod}).
"""

from zope.interface import implementer

from txenvoy.interfaces import (
    IRouterFilterCallbacks,
    IStreamDecoderFilter,
    IStreamEncoderFilter,
    IStreamFilterCallbacks,
)
from txenvoy.server.logging import componentLogger

_log = componentLogger("http")

__all__ = [
    "FilterHeadersStatus", "FilterDataStatus", "FilterTrailersStatus",
    "IStreamFilterCallbacks", "PassThroughFilter", "ConfiguredFilter", "LocalReplyDetails",
    "filterRoles",
    "filterMethod",
    "FilterSlot", "SingleFilterSlot", "FilterIteration", "startSlot",
]


class FilterHeadersStatus:
    """What C{decodeHeaders} / C{encodeHeaders} return."""

    Continue = 0
    StopIteration = 1
    StopAllIterationAndBuffer = 3
    StopAllIterationAndWatermark = 4


class FilterDataStatus:
    """What C{decodeData} / C{encodeData} return."""

    Continue = 0
    StopIterationAndBuffer = 1
    StopIterationAndWatermark = 2
    StopIterationNoBuffer = 3


class FilterTrailersStatus:
    """What C{decodeTrailers} / C{encodeTrailers} return."""

    Continue = 0
    StopIteration = 1


class LocalReplyDetails:
    """Envoy's C{%RESPONSE_CODE_DETAILS%} for the replies txenvoy itself sends."""

    ROUTE_NOT_FOUND = "route_not_found"
    CLUSTER_NOT_FOUND = "cluster_not_found"
    DIRECT_RESPONSE = "direct_response"
    NO_HEALTHY_UPSTREAM = "no_healthy_upstream"
    UPSTREAM_OVERFLOW = "upstream_reset_before_response_started{overflow}"
    UPSTREAM_TIMEOUT = "upstream_response_timeout"
    UPSTREAM_PER_TRY_TIMEOUT = "upstream_per_try_timeout"
    STREAM_IDLE_TIMEOUT = "stream_idle_timeout"
    REQUEST_OVERALL_TIMEOUT = "request_overall_timeout"
    REQUEST_HEADER_TIMEOUT = "request_header_timeout"
    MAX_DURATION_TIMEOUT = "max_duration_timeout"
    UPGRADE_FAILED = "upgrade_failed"
    VIA_UPSTREAM = "via_upstream"
    PATH_NORMALIZATION_FAILED = "path_normalization_failed"
    REQUEST_PAYLOAD_TOO_LARGE = "request_payload_too_large"
    RESPONSE_PAYLOAD_TOO_LARGE = "response_payload_too_large"
    FILTER_CHAIN_NOT_FOUND = "filter_chain_not_found"


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class PassThroughFilter:
    """
    A filter that lets everything through (Envoy's C{PassThroughFilter});
    subclass it and override what you need. Only the overridden direction
    is run.

    @ivar callbacks: the filter's L{IStreamFilterCallbacks}.
    """

    def __init__(self, callbacks):
        self.callbacks = callbacks

    def decodeHeaders(self, headers, endStream):
        """Continue."""
        return FilterHeadersStatus.Continue

    def decodeData(self, data, endStream):
        """Continue."""
        return FilterDataStatus.Continue

    def decodeTrailers(self, trailers):
        """Continue."""
        return FilterTrailersStatus.Continue

    def encodeHeaders(self, headers, endStream):
        """Continue."""
        return FilterHeadersStatus.Continue

    def encodeData(self, data, endStream):
        """Continue."""
        return FilterDataStatus.Continue

    def encodeTrailers(self, trailers):
        """Continue."""
        return FilterTrailersStatus.Continue

    def onDestroy(self):
        """Nothing to release."""
        pass


class ConfiguredFilter(PassThroughFilter):
    """
    A L{PassThroughFilter} that its filter config makes for each request,
    as C{cls(config, callbacks)}.

    @ivar config: the filter's config, shared by every request.
    """

    def __init__(self, config, callbacks):
        self.callbacks = callbacks
        self.config = config


_roles = {}


def filterRoles(filter_):
    """
    @return: C{(isDecoder, isEncoder)} for a filter, decided once per
        class: a method counts when it exists and is not
        L{PassThroughFilter}'s own pass-through.
    """
    cls = type(filter_)
    roles = _roles.get(cls)
    if roles is None:
        decoder = any(
            getattr(cls, name, None) is not None
            and getattr(cls, name) is not getattr(PassThroughFilter, name)
            for name in ("decodeHeaders", "decodeData", "decodeTrailers"))
        encoder = any(
            getattr(cls, name, None) is not None
            and getattr(cls, name) is not getattr(PassThroughFilter, name)
            for name in ("encodeHeaders", "encodeData", "encodeTrailers"))
        if decoder and getattr(cls, "decodeHeaders", None) is None:
            decoder = False
        if encoder and getattr(cls, "encodeHeaders", None) is None:
            encoder = False
        roles = _roles[cls] = (decoder, encoder)
    return roles


_methods = {}


def filterMethod(filter_, name):
    """
    The function behind a filter's declared method C{name} (call it with
    the filter first), looked up once per class; L{PassThroughFilter}'s
    when the filter's class does not have it.
    """
    cls = type(filter_)
    f = _methods.get((cls, name))
    if f is None:
        f = _methods[cls, name] = getattr(cls, name, None) or getattr(PassThroughFilter, name)
    return f


# -- the filter manager: what the connection manager runs a chain with ----------

_CONTINUE = FilterHeadersStatus.Continue
_DATA_CONTINUE = FilterDataStatus.Continue
_DATA_NO_BUFFER = FilterDataStatus.StopIterationNoBuffer
_TRAILERS_CONTINUE = FilterTrailersStatus.Continue


# -- the filter chain --------------------------------------------------------------


@implementer(IRouterFilterCallbacks)
class FilterSlot:
    """
    One HTTP filter of one stream and the callbacks it was given: the
    connection manager's implementation of L{IStreamFilterCallbacks} (and
    of L{IRouterFilterCallbacks}), whose documentation its methods follow.
    C{stream} is an L{IFilterManagerStream}, the connection manager's
    C{ActiveStream}.
    """

    __slots__ = ("stream", "filter", "filterConfigName", "decIndex", "encIndex")

    def __init__(self, stream, name):
        startSlot(self, stream, name)

    @property
    def streamInfo(self):
        return self.stream.streamInfo

    @property
    def connection(self):
        return self.stream.connection

    @property
    def dispatcher(self):
        return self.stream.dispatcher

    @property
    def streamId(self):
        return self.stream.streamId

    @property
    def requestHeaders(self):
        return self.stream.requestHeaders

    @property
    def activeSpan(self):
        return self.stream.activeSpan

    @property
    def tracingConfig(self):
        return self.stream.cm.config.tracing

    @property
    def responseHeaders(self):
        return self.stream.responseHeaders

    def route(self):
        return self.stream.route()

    def clearRouteCache(self):
        self.stream.clearRouteCache()

    def recreateStream(self, responseHeaders, body=b""):
        return self.stream.recreateStream(responseHeaders, body)

    def continueDecoding(self):
        self.stream.continueDecoding(self.decIndex)

    def continueEncoding(self):
        self.stream.continueEncoding(self.encIndex)

    def sendLocalReply(self, code, body=b"", modifyHeaders=None, details=""):
        self.stream.sendLocalReply(code, body, modifyHeaders, details)

    def encodeHeaders(self, headers, endStream):
        self.stream.encodeHeaders(headers, endStream)

    def encodeData(self, data, endStream):
        self.stream.encodeData(data, endStream)

    def encodeTrailers(self, trailers):
        self.stream.encodeTrailers(trailers)

    def resetStream(self):
        self.stream.resetStream()

    def addDecodedData(self, data):
        it = self.stream._decoding
        if it is not None and data:
            it.passData(self.decIndex, data)

    def addEncodedData(self, data):
        it = self.stream._encoding
        if it is not None and data:
            it.passData(self.encIndex, data)

    def decodingBuffer(self):
        return self.stream.decodingBuffer(self.decIndex)

    def encodingBuffer(self):
        it = self.stream._encoding
        return it.held(self.encIndex) if it is not None else None

    def modifyDecodingBuffer(self, data):
        it = self.stream._decoding
        if it is not None:
            it.replaceHeld(self.decIndex, data)

    def modifyEncodingBuffer(self, data):
        it = self.stream._encoding
        if it is not None:
            it.replaceHeld(self.encIndex, data)

    def bufferLimit(self):
        return self.stream.bufferLimit()

    def callLater(self, delay, f):
        return self.stream.callLater(delay, f)

    def onDecoderFilterAboveWriteBufferHighWatermark(self):
        self.stream.readDisable(True)

    def onDecoderFilterBelowWriteBufferLowWatermark(self):
        self.stream.readDisable(False)

    def addDownstreamWatermarkCallbacks(self, callbacks):
        self.stream.addWatermarkCallbacks(callbacks)

    def removeDownstreamWatermarkCallbacks(self, callbacks):
        self.stream.removeWatermarkCallbacks(callbacks)

    def setRouteIdleTimeout(self, timeout):
        self.stream.setIdleTimeout(timeout)

    def setMaxStreamDuration(self, timeout):
        self.stream.setMaxStreamDuration(timeout)

    def writeBatcher(self):
        return self.stream.writeBatcher()


class SingleFilterSlot(FilterSlot):
    """
    The slot of a chain's only filter (the router alone), made once the
    request's stream info and span exist: those and the dispatcher cannot
    change for the slot's life, so they are plain attributes, set by the
    connection manager, rather than properties asking the stream on every
    read.
    """

    __slots__ = ("streamInfo", "dispatcher", "activeSpan")


def startSlot(self, stream, name):
    """
    Fill C{self}, a new L{FilterSlot}, as its C{__init__} does, and return
    it: the connection manager makes the router's slot once per request
    with C{startSlot(object.__new__(FilterSlot), ...)}, without Python's
    class call, whose path through C{__init__} costs about as much as
    filling the fields.
    """
    self.stream = stream
    self.filterConfigName = name
    self.filter = None
    self.decIndex = -1
    self.encIndex = -1
    return self


_NOT_STOPPED = 1 << 30

#: "decodeHeaders" -> "decode headers", as Envoy's filter manager says.
_CALLED = {name: name[:6] + " " + name[6:].lower() for name in (
    "decodeHeaders", "decodeData", "decodeTrailers",
    "encodeHeaders", "encodeData", "encodeTrailers")}


def _streamTag(stream):
    logTag = getattr(stream, "logTag", None)
    return logTag() if logTag is not None else ""


def _traceCalled(stream, method, slot, status):
    # Envoy's trace line after each filter call (its status is the enum's
    # number, as Envoy prints it).
    _log.trace("%s%s called: filter=%s status=%d", _streamTag(stream), _CALLED[method],
               slot.filterConfigName, int(status))


def _noop(*args):
    # Past the last decoder filter there is nothing: a request no filter
    # answered waits (for stream_idle_timeout), as in Envoy.
    pass


class FilterIteration:
    """
    One direction of a stream's filter chain (Envoy's filter manager
    iteration), used by the connection manager: headers, data and trailers
    pass the filters in order; a filter may stop them, hold body data, and
    later resume; what passes the last filter goes to the sinks.

    @ivar stop: the index of the filter that stopped iteration (it holds
        the buffered data), or a large number while data flows.
    """

    __slots__ = ("stream", "slots", "n", "names", "sinkHeaders", "sinkData", "sinkTrailers",
                 "headers", "headersPassed", "headersDone", "stop", "stopAll", "buf",
                 "bufSize", "bufEnd", "trailers", "endSeen", "limit", "overflow")

    def __init__(self, stream, slots, names, sinks, limit, overflow):
        self.stream = stream
        self.slots = slots
        self.n = len(slots)
        self.names = names
        self.sinkHeaders, self.sinkData, self.sinkTrailers = sinks
        self.headers = None
        self.headersPassed = 0
        self.headersDone = False
        self.stop = _NOT_STOPPED
        self.stopAll = False
        self.buf = None
        self.bufSize = 0
        self.bufEnd = False
        self.trailers = None
        self.endSeen = False
        self.limit = limit
        self.overflow = overflow

    def runHeaders(self, headers, endStream):
        """Pass a head through the filters from the first."""
        self.headers = headers
        if endStream:
            self.endSeen = True
        self._headers(0, endStream)

    def _headers(self, start, endStream):
        slots = self.slots
        method = self.names[0]
        stream = self.stream
        for i in range(start, self.n):
            self.headersPassed = i + 1
            status = getattr(slots[i].filter, method)(self.headers, endStream)
            if _log.traceEnabled:
                _traceCalled(stream, method, slots[i], status)
            if stream.iterationStopped(self):
                return False
            if status != _CONTINUE:
                self.stop = i
                self.stopAll = status >= FilterHeadersStatus.StopAllIterationAndBuffer
                return False
        self.headersDone = True
        self.stop = _NOT_STOPPED
        self.sinkHeaders(self.headers, endStream)
        return True

    def runData(self, data, endStream):
        """Pass body bytes through the filters from the first."""
        if endStream:
            self.endSeen = True
        self._data(0, data, endStream)

    def _data(self, start, data, endStream):
        slots = self.slots
        method = self.names[1]
        stream = self.stream
        i = start
        n = self.n
        while i < n:
            if i == self.stop and self.stopAll:
                self._hold(data, endStream)
                return
            status = getattr(slots[i].filter, method)(data, endStream)
            if status.__class__ is tuple:
                # The filter passes other bytes on (see the module docstring).
                status, data = status
            if _log.traceEnabled:
                _traceCalled(stream, method, slots[i], status)
            if stream.iterationStopped(self):
                return
            if status == _DATA_CONTINUE:
                if i == self.stop:
                    self.stop = _NOT_STOPPED
                    if self.buf is not None:
                        held = self.buf
                        self.buf = None
                        self.bufSize = 0
                        held.append(data)
                        data = b"".join(held)
                        endStream = endStream or self.bufEnd
                if not self.headersDone and self.headersPassed == i + 1:
                    self._headers(i + 1, False)
                    if stream.iterationStopped(self):
                        return
                i += 1
                continue
            if status == _DATA_NO_BUFFER:
                if i != self.stop:
                    self.stop = i
                    self.stopAll = False
                return
            if i != self.stop:
                self.stop = i
                self.stopAll = False
            self._hold(data, endStream)
            return
        self.sinkData(data, endStream)

    def _hold(self, data, endStream):
        if self.buf is None:
            self.buf = [data]
        else:
            self.buf.append(data)
        self.bufSize += len(data)
        if endStream:
            self.bufEnd = True
        if self.bufSize > self.limit:
            self.overflow()

    def passData(self, index, data):
        """
        Body bytes from the filter at C{index}, for the filters after it
        (its C{addDecodedData} / C{addEncodedData} while it sees the
        trailers).
        """
        self._data(index + 1, data, False)

    def held(self, index):
        """The body bytes the filter at C{index} holds buffered, or C{None}."""
        if index == self.stop and self.buf:
            return b"".join(self.buf)
        return None

    def replaceHeld(self, index, data):
        """
        Make C{data} the body held by the filter at C{index}, which stopped
        iteration (Envoy's C{modifyDecodingBuffer}: a filter rewrites the
        body it buffered).
        """
        if index != self.stop:
            return
        self.buf = [data]
        self.bufSize = len(data)

    def runTrailers(self, trailers):
        """Pass trailers through the filters from the first."""
        self.endSeen = True
        self._trailers(0, trailers)

    def _trailers(self, start, trailers):
        slots = self.slots
        method = self.names[2]
        stream = self.stream
        for i in range(start, self.n):
            stopped = i == self.stop
            if stopped and self.stopAll:
                self.trailers = trailers
                return
            f = slots[i].filter
            status = filterMethod(f, method)(f, trailers)
            if _log.traceEnabled:
                _traceCalled(stream, method, slots[i], status)
            if stream.iterationStopped(self):
                return
            if stopped:
                # A filter that stopped its headers (StopIteration) still
                # sees the trailers; continuing from them sends on what it
                # held, as Envoy's commonHandleAfterTrailersCallback.
                self.trailers = trailers
                if status == _TRAILERS_CONTINUE:
                    self.resume(i)
                return
            if status != _TRAILERS_CONTINUE:
                self.stop = i
                self.stopAll = False
                self.trailers = trailers
                return
        self.sinkTrailers(trailers)

    def resume(self, index):
        """The filter at C{index} continues iteration."""
        if index != self.stop:
            return
        self.stop = _NOT_STOPPED
        stream = self.stream
        if _log.traceEnabled:
            _log.trace("%scontinuing filter chain: filter=%s", _streamTag(stream),
                       self.slots[index].filterConfigName)
        if not self.headersDone and self.headersPassed == index + 1:
            end = self.endSeen and self.buf is None and self.trailers is None
            self._headers(index + 1, end)
            if stream.iterationStopped(self):
                return
            if end:
                return
        if self.buf is not None:
            data = b"".join(self.buf)
            end = self.bufEnd and self.trailers is None
            self.buf = None
            self.bufSize = 0
            self._data(index + 1, data, end)
            if stream.iterationStopped(self) or self.stop != _NOT_STOPPED:
                return
        if self.trailers is not None:
            trailers = self.trailers
            self.trailers = None
            self._trailers(index + 1, trailers)


DECODE_NAMES = ("decodeHeaders", "decodeData", "decodeTrailers")
ENCODE_NAMES = ("encodeHeaders", "encodeData", "encodeTrailers")
DECODE_SINKS = (_noop, _noop, _noop)
