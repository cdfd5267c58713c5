# -*- test-case-name: tests.extensions.filters.http.test_lua -*-
"""
C{envoy.filters.http.lua}: a Lua script sees, changes or answers each
request and response, through Envoy's stream handle API
(C{envoy_on_request(handle)} / C{envoy_on_response(handle)}).

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
C{tests/extensions/filters/http/test_lua.py} and C{tests/e2e/test_lua.py}):

 - the script (C{default_source_code}, or the deprecated C{inline_code})
   and every one of C{source_codes} is loaded when the config loads; one
   that does not compile, or whose top level fails, fails the config with
   C{script load error: <Lua's message>};
 - each worker has its own Lua state per script (L{LuaState}), so globals
   persist between the requests of one worker;
 - each call runs as a coroutine; C{body()}, C{bodyChunks()},
   C{trailers()} and a synchronous C{httpCall()} suspend it until the
   stream has what they wait for, holding the headers (and buffering the
   body) where Envoy does;
 - a runtime error is logged (C{script log: <message>}, logger C{lua}),
   counted in C{lua.errors}, and the stream goes on as if the script had
   returned; C{lua.executions} counts every call of either function;
 - C{respond()} answers with a local reply (details C{lua_response}); in
   the response direction, or once the headers went on, it is an error;
 - C{httpCall(cluster, headers, body, timeout_ms[, asynchronous])} (or
   an options table for the fourth argument) sends a request through the
   cluster; its answer is a table of headers (with C{:status}) and the
   body (C{nil} when empty); the request carries C{x-forwarded-for} with
   the server's address unless the options say C{send_xff = false}; a
   failure is the router's local reply
   (C{503 upstream connect error ...}, C{504 upstream request timeout});
 - objects a script got (headers, buffers, stream info) die when its
   coroutine yields: using one after C{body()} or C{httpCall()} is the
   error C{object used outside of proper scope};
 - request header changes clear the route cache unless
   C{clear_route_cache} is false;
 - C{LuaPerRoute}: C{disabled}, C{name} (one of C{source_codes}; an
   unknown name runs nothing), C{source_code}, C{filter_context}
   (C{handle:filterContext()}).

Stats: C{http.<prefix>.lua.[<stat_prefix>.]errors} and C{executions}.
"""

import base64
import datetime

from google.protobuf import json_format
from twisted.logger import Logger
from zope.interface import implementer

from envoy.extensions.filters.http.lua.v3 import lua_pb2  # noqa: F401

from txenvoy.config.datasource import readDataSource
from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.filters.common.lua import LuaState, LuaScriptError, fromLua, toLua
from txenvoy.http.async_client import NO_HEALTHY_UPSTREAM, TIMEOUT, AsyncHttpClient
from txenvoy.http.conn_manager_utility import machineAddress
from txenvoy.http.filter import (
    ConfiguredFilter,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
)
from txenvoy.http.filter_config import RouteSpecificConfigs, WorkerStats, httpStatPrefix
from txenvoy.http.headers import HeaderMap, RequestHeaders, ResponseHeaders
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter
from txenvoy.server.logging import componentLogger
from txenvoy.stats.per_worker import PerWorker

import lupa.luajit21 as _lupa

__all__ = ["LuaCode", "LuaFilterConfig", "LuaFilter", "createLua"]

_NAME = "envoy.filters.http.lua"
_LUA = "envoy.extensions.filters.http.lua.v3.Lua"
_PER_ROUTE = "envoy.extensions.filters.http.lua.v3.LuaPerRoute"

log = Logger(namespace="lua")
_trace = componentLogger("lua")

# A script's coroutine, as Envoy's StreamHandleWrapper names its states.
_RUNNING = 0
_WAIT_BODY = 1
_WAIT_CHUNK = 2
_WAIT_TRAILERS = 3
_HTTP_CALL = 4
_RESPONDED = 5

_RETURN = 0
_YIELD = 1
_ERROR = 2

_PSEUDO_REQUEST = (b":authority", b":path", b":method", b":scheme")


class LuaCode:
    """
    One script (Envoy's C{PerLuaCodeSetup}): checked once when the config
    loads, then one L{LuaState} per worker.
    """

    def __init__(self, code, path):
        """
        @raise ConfigError: naming C{path} when the script does not load.
        """
        try:
            checked = LuaState(code)
        except LuaScriptError as e:
            raise ConfigError("%s: %s" % (path, e))
        self.code = code
        self.hasRequest = checked.function("envoy_on_request") is not None
        self.hasResponse = checked.function("envoy_on_response") is not None
        self.states = PerWorker(lambda dispatcher: LuaState(code))

    def state(self, dispatcher):
        """This worker's L{LuaState}."""
        return self.states.get(dispatcher)


class _PerRoute:
    """A compiled C{LuaPerRoute}."""

    __slots__ = ("disabled", "name", "code", "context")

    def __init__(self, disabled=False, name=None, code=None, context=None):
        self.disabled = disabled
        self.name = name
        self.code = code
        self.context = context or {}


def compilePerRoute(message, path):
    """Compile a C{LuaPerRoute}."""
    checkFields(message, ("disabled", "name", "source_code", "filter_context"), path)
    context = (json_format.MessageToDict(message.filter_context)
               if message.HasField("filter_context") else None)
    which = message.WhichOneof("override")
    if which == "disabled":
        if not message.disabled:
            raise ConfigError("%s.disabled: Proto constraint validation failed (LuaPerRouteValidation"
                              "Error.Disabled: value must equal true)" % (path,))
        return _PerRoute(disabled=True, context=context)
    if which == "name":
        return _PerRoute(name=message.name, context=context)
    if which == "source_code":
        source = readDataSource(message.source_code, path + ".source_code")
        return _PerRoute(code=LuaCode(source, path + ".source_code"), context=context)
    raise ConfigError("%s: Proto constraint validation failed (LuaPerRouteValidationError.Override: "
                      "value is required)" % (path,))


compilePerRoute.takesPath = True


@implementer(IHttpFilterFactory)
class LuaFilterConfig:
    """
    A compiled C{Lua} config; the filter factory.

    @ivar default: the L{LuaCode} run when no route says otherwise, or
        C{None}.
    @ivar sourceCodes: C{{name: LuaCode}} for C{LuaPerRoute.name}.
    """

    terminal = False

    def __init__(self, default, sourceCodes, clearRouteCache, statPrefix):
        self.default = default
        self.sourceCodes = sourceCodes
        self.clearRouteCache = clearRouteCache
        self.stats = WorkerStats({"errors": statPrefix + "errors",
                                  "executions": statPrefix + "executions"})
        self.routeConfigs = RouteSpecificConfigs(_NAME, (_PER_ROUTE,), compilePerRoute)
        self.clients = PerWorker(AsyncHttpClient)

    def createFilter(self, callbacks):
        """@return: a L{LuaFilter}."""
        return LuaFilter(self, callbacks)


class _NoAnswer:
    """The callbacks of an asynchronous C{httpCall}: nobody listens."""

    def onSuccess(self, response, body):
        pass

    def onFailure(self, reason):
        pass


_NO_ANSWER = _NoAnswer()


def _address(address):
    if not address:
        return b""
    host, port = address[0], address[1]
    if ":" in host:
        host = "[%s]" % (host,)
    return ("%s:%d" % (host, port)).encode("ascii")


class _Stream:
    """
    One run of one script function on one direction of a stream (Envoy's
    C{StreamHandleWrapper}): the coroutine, what it waits for, and the
    Python side of every call the handle makes.
    """

    def __init__(self, filt, state, function, head, endStream, decoding):
        self.filter = filt
        self.callbacks = filt.callbacks
        self.luaState = state
        self.head = head
        self.endStream = endStream
        self.decoding = decoding
        self.state = _RUNNING
        self.dead = False
        self.headersContinued = False
        self.sawBody = False
        self.bufferedBody = False
        self.trailers = None
        self.chunk = None
        self.pending = None
        self.reply = None
        self._inCall = False
        self._immediate = None
        self.step = state.runner(function, self.call)

    # Running the coroutine.

    def _run(self, *values):
        self.state = _RUNNING
        ok, result = self.step(*values)
        if not ok:
            self._error(result)
        elif not result and self.state == _RUNNING:
            self._error("script performed an unexpected yield")
        elif result:
            self.dead = True
        reply = self.reply
        if reply is not None:
            # Sent once the coroutine is suspended: the reply runs the
            # response script, and a state runs one thing at a time.
            self.reply = None
            self.callbacks.sendLocalReply(*reply)

    def _error(self, message):
        self.dead = True
        self.state = _RUNNING
        self.filter.scriptError(message)

    def start(self):
        """Run the function from the headers; Envoy's C{start}."""
        self._run()
        if self.state in (_WAIT_BODY, _HTTP_CALL, _RESPONDED):
            return FilterHeadersStatus.StopIteration
        self.headersContinued = True
        return FilterHeadersStatus.Continue

    def onData(self, data, endStream):
        """Envoy's C{onData}: body bytes for a script that may wait on them."""
        self.endStream = endStream
        self.sawBody = True
        replaced = None
        state = self.state
        if state == _WAIT_CHUNK:
            self.chunk = data
            self._run(b"chunk")
            if self.chunk is not data:
                replaced = self.chunk
            self.chunk = None
        elif state == _WAIT_BODY and endStream:
            # Envoy adds the last bytes to the buffered body, then shows it.
            held = self._held()
            self._setHeld((held or b"") + data)
            data = b""
            replaced = b""
            self._run(b"body")
        elif state == _WAIT_TRAILERS and endStream:
            self._run()
        state = self.state
        if state in (_HTTP_CALL, _WAIT_BODY):
            return FilterDataStatus.StopIterationAndBuffer
        if state == _RESPONDED:
            return FilterDataStatus.StopIterationNoBuffer
        self.headersContinued = True
        if replaced is not None:
            return FilterDataStatus.Continue, replaced
        return FilterDataStatus.Continue

    def onTrailers(self, trailers):
        """Envoy's C{onTrailers}."""
        self.endStream = True
        self.trailers = trailers
        if self.state == _WAIT_CHUNK:
            self._run()
        elif self.state == _WAIT_BODY:
            self._run(b"body")
        if self.state == _WAIT_TRAILERS:
            self._run(True)
        if self.state in (_HTTP_CALL, _RESPONDED):
            return FilterTrailersStatus.StopIteration
        self.headersContinued = True
        return FilterTrailersStatus.Continue

    def cancel(self):
        """The stream is gone: drop a call in flight."""
        pending = self.pending
        if pending is not None:
            self.pending = None
            pending.cancel()

    def _held(self):
        callbacks = self.callbacks
        return callbacks.decodingBuffer() if self.decoding else callbacks.encodingBuffer()

    def _setHeld(self, data):
        callbacks = self.callbacks
        if self.decoding:
            callbacks.modifyDecodingBuffer(data)
        else:
            callbacks.modifyEncodingBuffer(data)

    def _continue(self):
        self.headersContinued = True
        if self.decoding:
            self.callbacks.continueDecoding()
        else:
            self.callbacks.continueEncoding()

    # The handle's calls: call(op, ...) -> (code, values...).

    def call(self, op, *args):
        method = _OPS.get(op)
        if method is None:
            return _ERROR, b"unknown operation"
        try:
            return method(self, *args)
        except _ApiError as e:
            return _ERROR, str(e).encode("utf-8")

    # Headers and trailers.

    def _map(self, which):
        return self.head if which == b"headers" else self.trailers

    def _modifiable(self, which):
        if which == b"headers" and self.headersContinued:
            raise _ApiError("header map can no longer be modified")
        if which == b"headers" and self.decoding and self.filter.config.clearRouteCache:
            self.callbacks.clearRouteCache()

    def _values(self, which, name):
        head = self._map(which)
        name = name.lower()
        if isinstance(head, RequestHeaders):
            pseudo = _requestPseudo(head, name)
            if pseudo is not _NOT_PSEUDO:
                return [pseudo] if pseudo is not None else []
        elif isinstance(head, ResponseHeaders) and name == b":status":
            return [b"%d" % (head.status,)]
        entries = head.headers if not isinstance(head, HeaderMap) else head
        return entries.getAll(name)

    def opGet(self, which, name):
        values = self._values(which, _str(name, 1))
        if not values:
            return _RETURN,
        return _RETURN, b",".join(values)

    def opGetAt(self, which, name, index):
        if index is None or index < 0:
            raise _ApiError("invalid index")
        values = self._values(which, _str(name, 1))
        index = int(index)
        if index >= len(values):
            return _RETURN,
        return _RETURN, values[index]

    def opNum(self, which, name):
        return _RETURN, len(self._values(which, _str(name, 1)))

    def opAdd(self, which, name, value):
        name, value = _str(name, 1).lower(), _str(value, 2)
        self._modifiable(which)
        head = self._map(which)
        if not _setPseudo(head, name, value):
            (head if isinstance(head, HeaderMap) else head.headers).add(name, value)
        return _RETURN,

    def opReplace(self, which, name, value):
        name, value = _str(name, 1).lower(), _str(value, 2)
        self._modifiable(which)
        head = self._map(which)
        if not _setPseudo(head, name, value):
            (head if isinstance(head, HeaderMap) else head.headers).set(name, value)
        return _RETURN,

    def opRemove(self, which, name):
        name = _str(name, 1).lower()
        self._modifiable(which)
        head = self._map(which)
        if not _setPseudo(head, name, None):
            (head if isinstance(head, HeaderMap) else head.headers).remove(name)
        return _RETURN,

    def opReason(self, which, phrase):
        head = self._map(which)
        if isinstance(head, ResponseHeaders):
            head.reason = _str(phrase, 1)
        return _RETURN,

    def opList(self, which):
        head = self._map(which)
        flat = []
        if isinstance(head, RequestHeaders):
            for name in _PSEUDO_REQUEST:
                value = _requestPseudo(head, name)
                if value is not None:
                    flat.extend((name, value))
            entries = head.headers
        elif isinstance(head, ResponseHeaders):
            flat.extend((b":status", b"%d" % (head.status,)))
            entries = head.headers
        else:
            entries = head
        for name, value in entries.items():
            flat.extend((name, value))
        return _RETURN, self.luaState.table(flat)

    # The body.

    def opBody(self, always=None):
        if self.endStream:
            held = self._held()
            if not self.bufferedBody and self.sawBody:
                raise _ApiError("cannot call body() after body has been streamed")
            if held is None and not always:
                return _RETURN, None
            return _RETURN, b"body"
        if self.sawBody:
            raise _ApiError("cannot call body() after body streaming has started")
        self.state = _WAIT_BODY
        self.bufferedBody = True
        return _YIELD,

    def opChunk(self):
        if self.endStream:
            return _RETURN, None
        self.state = _WAIT_CHUNK
        return _YIELD,

    def opTrailers(self):
        if self.trailers is not None:
            return _RETURN, True
        if self.endStream:
            return _RETURN, None
        self.state = _WAIT_TRAILERS
        return _YIELD,

    def _bytesOf(self, which):
        if which == b"chunk":
            return self.chunk or b""
        return self._held() or b""

    def opBufLength(self, which):
        return _RETURN, len(self._bytesOf(which))

    def opBufGet(self, which, index, length):
        data = self._bytesOf(which)
        index, length = int(index), int(length)
        if index < 0 or length < 0 or index + length > len(data):
            raise _ApiError("index/length must be >= 0 and (index + length) must be <= buffer size")
        return _RETURN, data[index:index + length]

    def opBufSet(self, which, value):
        value = _str(value, 1)
        if which == b"chunk":
            self.chunk = value
        else:
            self._setHeld(value)
            if not self.headersContinued:
                entries = self.head.headers
                entries.set(b"content-length", b"%d" % (len(value),))
        return _RETURN,

    # What the stream knows.

    def opMetadata(self):
        return _RETURN, toLua(self.luaState, self.filter.routeMetadata())

    def opFilterContext(self):
        return _RETURN, toLua(self.luaState, self.filter.filterContext())

    def opStreamInfo(self, what):
        info = self.callbacks.streamInfo
        if what == b"protocol":
            return _RETURN, (info.protocol or "HTTP/1.1").encode("ascii")
        if what == b"routeName":
            return _RETURN, (info.routeName or "").encode("utf-8")
        if what == b"requestedServerName":
            return _RETURN, (info.requestedServerName or "").encode("utf-8")
        if what == b"downstreamLocalAddress":
            return _RETURN, _address(info.downstreamLocalAddress)
        if what == b"downstreamRemoteAddress":
            return _RETURN, _address(info.downstreamRemoteAddress)
        if what == b"downstreamDirectRemoteAddress":
            return _RETURN, _address(info.downstreamDirectRemoteAddress or
                                     info.downstreamRemoteAddress)
        if what == b"tls":
            return _RETURN, _tlsOf(self.callbacks.connection) is not None
        raise _ApiError("unknown stream info")

    def opSsl(self, what):
        ssl = _tlsOf(self.callbacks.connection)
        name = _text(what)
        if ssl is None or name not in _SSL_METHODS:
            return _RETURN,
        value = getattr(ssl, name, None)
        if isinstance(value, datetime.datetime):
            value = int(value.timestamp())
        elif isinstance(value, str):
            value = value.encode("utf-8")
        elif isinstance(value, (list, tuple)):
            value = self.luaState.table([_toBytes(v) for v in value])
        return _RETURN, value

    def opDynamicGet(self, namespace):
        value = self.callbacks.streamInfo.dynamicMetadata.get(_text(_str(namespace, 1)))
        return _RETURN, toLua(self.luaState, value) if value is not None else None

    def opDynamicSet(self, namespace, key, value):
        metadata = self.callbacks.streamInfo.dynamicMetadata
        metadata.setdefault(_text(_str(namespace, 1)), {})[_text(_str(key, 2))] = fromLua(value)
        return _RETURN,

    def opDynamicList(self):
        flat = []
        for namespace, value in self.callbacks.streamInfo.dynamicMetadata.items():
            flat.extend((namespace.encode("utf-8"), toLua(self.luaState, value)))
        return _RETURN, self.luaState.table(flat)

    def opLog(self, level, message):
        text = _text(message if isinstance(message, bytes) else str(message).encode())
        if level == b"trace":
            if _trace.traceEnabled:
                _trace.trace("script log: %s", text)
        elif level == b"debug":
            if _trace.debugEnabled:
                _trace.debug("script log: %s", text)
        else:
            getattr(log, {b"info": "info", b"warn": "warn", b"error": "error",
                          b"critical": "critical"}[level])("script log: {text}", text=text)
        return _RETURN,

    def opBase64(self, value):
        return _RETURN, base64.b64encode(_str(value, 1))

    def opClearRouteCache(self):
        if self.decoding:
            self.callbacks.clearRouteCache()
        return _RETURN,

    # httpCall and respond.

    def opHttpCall(self, cluster, headers, body, timeout, asynchronous):
        sendXff = True
        if _lupa.lua_type(timeout) == "table":
            options = timeout
            timeout = options[b"timeout_ms"] or 0
            asynchronous = options[b"asynchronous"]
            sendXff = options[b"send_xff"] is not False
        if asynchronous is not None and not isinstance(asynchronous, bool):
            raise _ApiError("http call asynchronous flag must be 'true', 'false', or empty")
        cluster = _text(_str(cluster, 2))
        if _lupa.lua_type(headers) != "table":
            raise _ApiError("bad argument #3 to 'httpCall' (table expected, got %s)"
                            % (_luaTypeName(headers),))
        if body is not None:
            body = _str(body, 4)
        if not isinstance(timeout, (int, float)):
            raise _ApiError("bad argument #5 to 'httpCall' (number expected, got %s)"
                            % (_luaTypeName(timeout),))
        timeout = int(timeout)
        if timeout < 0:
            raise _ApiError("http call timeout must be >= 0")
        callbacks = self.callbacks
        dispatcher = callbacks.dispatcher
        if dispatcher.clusterManager.getThreadLocalCluster(cluster) is None:
            raise _ApiError("http call cluster invalid. Must be configured")
        request = _requestFromTable(headers)
        if request is None:
            raise _ApiError("http call headers must include ':path', ':method', and ':authority'")
        if sendXff:
            # Envoy's async client appends the server's own address.
            _appendXff(request.headers, _localAddress())
        client = self.filter.config.clients.get(dispatcher)
        seconds = timeout / 1000.0 if timeout else None
        if asynchronous:
            client.send(cluster, request, body or b"", seconds, _NO_ANSWER)
            return _RETURN,
        self._inCall = True
        self._immediate = None
        handle = client.send(cluster, request, body or b"", seconds, self)
        self._inCall = False
        if self._immediate is not None:
            answer, self._immediate = self._immediate, None
            return (_RETURN,) + answer
        self.pending = handle
        self.state = _HTTP_CALL
        return _YIELD,

    def _answer(self, status, entries, body):
        flat = {b":status": b"%d" % (status,)}
        for name, value in entries:
            flat[name] = value
        return self.luaState.table(flat), (body or None)

    def onSuccess(self, response, body):
        """The C{httpCall} answer (L{IAsyncRequestCallbacks})."""
        self._answered(self._answer(response.status, response.headers.items(), body))

    def onFailure(self, reason):
        """
        No answer: what Envoy's async client gets from its router (a 504
        C{upstream request timeout}, a 503 naming the reset reason).
        """
        if reason == TIMEOUT:
            status, body = 504, b"upstream request timeout"
        elif reason == NO_HEALTHY_UPSTREAM:
            status, body = 503, b"no healthy upstream"
        else:
            status = 503
            body = ("upstream connect error or disconnect/reset before headers. reset reason: %s"
                    % (reason,)).encode("utf-8")
        self._answered(self._answer(status, ((b"content-length", b"%d" % (len(body),)),
                                             (b"content-type", b"text/plain")), body))

    def _answered(self, answer):
        self.pending = None
        if self._inCall:
            self._immediate = answer
            return
        self._run(*answer)
        if self.state == _RUNNING:
            self._continue()

    def opRespond(self, headers, body):
        if not self.decoding:
            raise _ApiError("respond not currently supported in the response path")
        if self.headersContinued:
            raise _ApiError("respond() cannot be called if headers have been continued")
        if _lupa.lua_type(headers) != "table":
            raise _ApiError("bad argument #2 to 'respond' (table expected, got %s)"
                            % (_luaTypeName(headers),))
        entries = _entriesFromTable(headers)
        status = None
        for name, value in entries:
            if name == b":status":
                status = value
        try:
            code = int(status)
        except (TypeError, ValueError):
            code = 0
        if not 200 <= code < 600:
            raise _ApiError(":status must be between 200-599")
        body = _str(body, 3) if body is not None else b""

        def addHeaders(reply):
            for name, value in entries:
                if name != b":status":
                    reply.headers.add(name, value)

        self.state = _RESPONDED
        self.reply = (code, body, addHeaders, "lua_response")
        return _YIELD,


_OPS = {
    b"hget": _Stream.opGet, b"hgetat": _Stream.opGetAt, b"hnum": _Stream.opNum,
    b"hadd": _Stream.opAdd, b"hreplace": _Stream.opReplace, b"hremove": _Stream.opRemove,
    b"hreason": _Stream.opReason, b"hlist": _Stream.opList,
    b"body": _Stream.opBody, b"chunk": _Stream.opChunk, b"trailers": _Stream.opTrailers,
    b"blength": _Stream.opBufLength, b"bget": _Stream.opBufGet, b"bset": _Stream.opBufSet,
    b"metadata": _Stream.opMetadata, b"filterContext": _Stream.opFilterContext,
    b"si": _Stream.opStreamInfo, b"ssl": _Stream.opSsl,
    b"dmget": _Stream.opDynamicGet, b"dmset": _Stream.opDynamicSet,
    b"dmlist": _Stream.opDynamicList, b"log": _Stream.opLog, b"base64": _Stream.opBase64,
    b"clearRouteCache": _Stream.opClearRouteCache,
    b"httpCall": _Stream.opHttpCall, b"respond": _Stream.opRespond,
}


_LOCAL_ADDRESS = []


def _localAddress():
    if not _LOCAL_ADDRESS:
        _LOCAL_ADDRESS.append(machineAddress().encode("ascii"))
    return _LOCAL_ADDRESS[0]


def _appendXff(entries, address):
    existing = entries.get(b"x-forwarded-for")
    entries.set(b"x-forwarded-for", existing + b"," + address if existing else address)


class _ApiError(Exception):
    """A script used the API wrongly: the Lua error it gets."""


_NOT_PSEUDO = object()


def _requestPseudo(head, name):
    if name == b":path":
        return head.path
    if name == b":method":
        return head.method
    if name == b":authority" or name == b"host":
        return head.authority
    if name == b":scheme":
        return head.scheme
    return _NOT_PSEUDO


def _setPseudo(head, name, value):
    """Set (or, with C{None}, clear) a pseudo-header; C{False} if C{name} is none."""
    if isinstance(head, RequestHeaders):
        if name == b":path":
            head.path = value
        elif name == b":method":
            head.method = value
        elif name == b":authority" or name == b"host":
            head.authority = value
        elif name == b":scheme":
            head.scheme = value
        else:
            return False
        return True
    if isinstance(head, ResponseHeaders) and name == b":status":
        if value is not None:
            head.status = int(value)
        return True
    return False


#: What a script may ask of a TLS connection (Envoy's SslConnectionWrapper),
#: read from the connection's L{txenvoy.extensions.transport_sockets.tls.SslConnectionInfo}.
_SSL_METHODS = frozenset([
    "peerCertificatePresented", "peerCertificateValidated", "sha256PeerCertificateDigest",
    "serialNumberPeerCertificate", "issuerPeerCertificate", "subjectPeerCertificate",
    "uriSanPeerCertificate", "uriSanLocalCertificate", "subjectLocalCertificate",
    "dnsSansPeerCertificate", "dnsSansLocalCertificate", "validFromPeerCertificate",
    "expirationPeerCertificate", "ciphersuiteString", "tlsVersion",
    "urlEncodedPemEncodedPeerCertificate", "urlEncodedPemEncodedPeerCertificateChain",
])


def _tlsOf(connection):
    """The connection's C{ssl} (an C{SslConnectionInfo}), or C{None} in plain text."""
    return getattr(connection, "ssl", None) if connection is not None else None


def _toBytes(value):
    return value.encode("utf-8") if isinstance(value, str) else value


def _luaTypeName(value):
    if value is None:
        return "no value"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, bytes):
        return "string"
    return _lupa.lua_type(value) or "userdata"


def _str(value, position):
    """A Lua string argument (numbers count, as C{luaL_checkstring} has it)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float)):
        raise _ApiError("bad argument #%d (string expected, got %s)"
                        % (position, _luaTypeName(value)))
    if isinstance(value, float) and value.is_integer():
        return b"%d" % (value,)
    return str(value).encode("ascii")


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _entriesFromTable(table):
    """Envoy's C{buildHeadersFromTable}: C{name = value} or C{name = {values}}."""
    entries = []
    for key, value in table.items():
        name = _str(key, 1).lower()
        if _lupa.lua_type(value) == "table":
            for _, one in value.items():
                entries.append((name, _str(one, 1)))
        else:
            entries.append((name, _str(value, 1)))
    return entries


def _requestFromTable(table):
    entries = _entriesFromTable(table)
    pseudo = {}
    rest = HeaderMap()
    for name, value in entries:
        if name in (b":path", b":method", b":authority", b":scheme"):
            pseudo[name] = value
        elif name == b"host":
            pseudo.setdefault(b":authority", value)
        else:
            rest.add(name, value)
    if b":path" not in pseudo or b":method" not in pseudo or b":authority" not in pseudo:
        return None
    return RequestHeaders(pseudo[b":method"], pseudo[b":path"], pseudo[b":authority"],
                          scheme=pseudo.get(b":scheme"), headers=rest)


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class LuaFilter(ConfiguredFilter):
    """The Lua filter of one stream."""

    _request = None
    _response = None
    _resolved = False
    _code = None
    _perRoute = None

    def _resolve(self):
        if self._resolved:
            return self._code
        self._resolved = True
        config = self.config
        perRoute = self._perRoute = config.routeConfigs.mostSpecific(self.callbacks)
        code = config.default
        if perRoute is not None:
            if perRoute.disabled:
                code = None
            elif perRoute.name is not None:
                code = config.sourceCodes.get(perRoute.name)
            elif perRoute.code is not None:
                code = perRoute.code
        self._code = code
        return code

    def _start(self, decoding, head, endStream):
        code = self._resolve()
        if code is None or not (code.hasRequest if decoding else code.hasResponse):
            return None
        dispatcher = self.callbacks.dispatcher
        state = code.state(dispatcher)
        function = state.function("envoy_on_request" if decoding else "envoy_on_response")
        if function is None:
            return None
        self.config.stats.forDispatcher(dispatcher).executions.inc()
        return _Stream(self, state, function, head, endStream, decoding)

    def scriptError(self, message):
        """A script failed: log it, count it, let the stream go on."""
        text = _text(message)
        log.error("script log: {text}", text=text)
        self.config.stats.forDispatcher(self.callbacks.dispatcher).errors.inc()

    def routeMetadata(self):
        """The route's C{filter_metadata} for this filter, as a dict."""
        route = self.callbacks.route()
        entry = getattr(route, "entry", None) if route is not None else None
        metadata = getattr(entry, "metadata", None)
        if metadata is None:
            return {}
        filterMetadata = metadata.filter_metadata
        for name in (self.callbacks.filterConfigName, _NAME):
            if name in filterMetadata:
                return json_format.MessageToDict(filterMetadata[name])
        return {}

    def filterContext(self):
        """The route's C{LuaPerRoute.filter_context}, as a dict."""
        self._resolve()
        return self._perRoute.context if self._perRoute is not None else {}

    # The request.

    def decodeHeaders(self, headers, endStream):
        stream = self._request = self._start(True, headers, endStream)
        if stream is None:
            return FilterHeadersStatus.Continue
        return stream.start()

    def decodeData(self, data, endStream):
        stream = self._request
        if stream is None or stream.dead:
            return FilterDataStatus.Continue
        return stream.onData(data, endStream)

    def decodeTrailers(self, trailers):
        stream = self._request
        if stream is None or stream.dead:
            return FilterTrailersStatus.Continue
        return stream.onTrailers(trailers)

    # The response.

    def encodeHeaders(self, headers, endStream):
        stream = self._response = self._start(False, headers, endStream)
        if stream is None:
            return FilterHeadersStatus.Continue
        return stream.start()

    def encodeData(self, data, endStream):
        stream = self._response
        if stream is None or stream.dead:
            return FilterDataStatus.Continue
        return stream.onData(data, endStream)

    def encodeTrailers(self, trailers):
        stream = self._response
        if stream is None or stream.dead:
            return FilterTrailersStatus.Continue
        return stream.onTrailers(trailers)

    def onDestroy(self):
        for stream in (self._request, self._response):
            if stream is not None:
                stream.cancel()


_FIELDS = ("inline_code", "source_codes", "default_source_code", "stat_prefix",
           "clear_route_cache")


@extension(Category.HTTP_FILTER, _LUA, _NAME, fields=_FIELDS)
def createLua(message, context):
    """Compile a C{Lua} message, loading every script once."""
    path = context.path + ".typed_config"
    default = None
    if message.HasField("default_source_code"):
        default = LuaCode(readDataSource(message.default_source_code,
                                         path + ".default_source_code"),
                          path + ".default_source_code")
    elif message.inline_code:
        default = LuaCode(message.inline_code.encode("utf-8"), path + ".inline_code")
    sourceCodes = {}
    for name in sorted(message.source_codes):
        where = "%s.source_codes[%s]" % (path, name)
        sourceCodes[name] = LuaCode(readDataSource(message.source_codes[name], where), where)
    prefix = httpStatPrefix(context) + "lua."
    if message.stat_prefix:
        prefix += message.stat_prefix + "."
    clearRouteCache = (message.clear_route_cache.value
                       if message.HasField("clear_route_cache") else True)
    config = LuaFilterConfig(default, sourceCodes, clearRouteCache, prefix)
    config.stats.declare(context)
    return config
