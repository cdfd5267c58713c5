# -*- test-case-name: tests.extensions.filters.common.test_lua -*-
"""
The Lua engine of the Lua extensions (Envoy's
C{extensions/filters/common/lua}): one LuaJIT state per worker for each
script, made with C{lupa}, and the conversions between Lua values and
Python ones.

As in Envoy, a state gets every standard library (Envoy calls
C{luaL_openlibs}: C{os}, C{io}, C{debug}, C{jit}, C{bit} are there), the
script's top level runs once per state, and its globals live as long as
the state: a counter a script keeps counts the requests of one worker.
What C{lupa} adds to a state is taken out again (its C{python} module),
and Python objects handed to Lua are opaque (no attribute can be read), so
a script sees Envoy's Lua and nothing of the process hosting it.

Envoy builds LuaJIT with Lua 5.2's C{__pairs}; the prelude gives C{pairs}
that metamethod, so C{for k, v in pairs(handle:headers())} iterates as it
does in Envoy.
"""

import lupa.luajit21 as _lupa

from txenvoy.config.errors import ConfigError

__all__ = ["LuaState", "LuaScriptError", "checkScript", "toLua", "fromLua", "PRELUDE"]

LuaError = _lupa.LuaError

#: The global functions a script may define, looked up once per state.
ENTRY_POINTS = ("envoy_on_request", "envoy_on_response", "envoy_on_route")


class LuaScriptError(Exception):
    """A script failed to load or to run; the message is Lua's."""


def _noAttributes(obj, name, isSetting):
    # A script gets no way into the Python objects it is handed.
    raise AttributeError(name)


#: Run in every state before the script: C{pairs} with C{__pairs}, and the
#: constructors of the objects Envoy's API hands to scripts. Each object
#: calls one Python function, C{call(op, ...)}, whose first result says what
#: to do: 0 return the rest, 1 yield the coroutine (the stream resumes it
#: with the results later), 2 raise the rest as the error.
PRELUDE = r"""
local rawpairs, getmetatable, setmetatable, error, type = pairs, getmetatable, setmetatable, error, type
local yield, create, resume, status = coroutine.yield, coroutine.create, coroutine.resume, coroutine.status
local tostring = tostring

pairs = function(t)
  local mt = getmetatable(t)
  if mt ~= nil and type(mt) == "table" and mt.__pairs ~= nil then
    return mt.__pairs(t)
  end
  return rawpairs(t)
end

-- In a tail call (the API method's frame is gone): level 2 is the script.
local function finish(code, ...)
  if code == 0 then return ... end
  if code == 1 then return yield() end
  error((...), 2)
end

-- Called from inside an API method: level 3 is the script.
local function finishIn(code, ...)
  if code == 0 then return ... end
  if code == 1 then return yield() end
  error((...), 3)
end

local function listIterator(list)
  local i = -1
  return function()
    i = i + 2
    local k = list[i]
    if k ~= nil then return k, list[i + 1] end
  end
end

-- Objects a script gets die when its coroutine yields (Envoy's
-- LuaDeathRef): using one after that is an error.
local function newScope()
  local scope = {epoch = 0}
  function scope.check(epoch)
    if epoch ~= scope.epoch then error("object used outside of proper scope", 3) end
  end
  return scope
end

local function newHeaders(call, id, scope)
  local h, e, check = {}, scope.epoch, scope.check
  function h:get(k) check(e) return finish(call("hget", id, k)) end
  function h:getAtIndex(k, i) check(e) return finish(call("hgetat", id, k, i)) end
  function h:getNumValues(k) check(e) return finish(call("hnum", id, k)) end
  function h:add(k, v) check(e) return finish(call("hadd", id, k, v)) end
  function h:replace(k, v) check(e) return finish(call("hreplace", id, k, v)) end
  function h:remove(k) check(e) return finish(call("hremove", id, k)) end
  function h:setHttp1ReasonPhrase(p) check(e) return finish(call("hreason", id, p)) end
  return setmetatable(h, {__pairs = function(t)
    check(e)
    return listIterator(finishIn(call("hlist", id))), t, nil
  end})
end

local function newBuffer(call, id, scope)
  local b, e, check = {}, scope.epoch, scope.check
  function b:length() check(e) return finish(call("blength", id)) end
  function b:getBytes(i, n) check(e) return finish(call("bget", id, i, n)) end
  function b:setBytes(s) check(e) return finish(call("bset", id, s)) end
  return b
end

local function newStruct(tbl, scope)
  local m, e, check = {}, scope.epoch, scope.check
  function m:get(k) check(e) return tbl[k] end
  return setmetatable(m, {__pairs = function(t) check(e) return rawpairs(tbl) end})
end

local function newDynamicMetadata(call, scope)
  local m, e, check = {}, scope.epoch, scope.check
  function m:get(ns) check(e) return finish(call("dmget", ns)) end
  function m:set(ns, k, v) check(e) return finish(call("dmset", ns, k, v)) end
  return setmetatable(m, {__pairs = function(t)
    check(e)
    return listIterator(finishIn(call("dmlist"))), t, nil
  end})
end

local SSL_METHODS = {
  "peerCertificatePresented", "peerCertificateValidated", "sha256PeerCertificateDigest",
  "serialNumberPeerCertificate", "issuerPeerCertificate", "subjectPeerCertificate",
  "uriSanPeerCertificate", "uriSanLocalCertificate", "subjectLocalCertificate",
  "dnsSansPeerCertificate", "dnsSansLocalCertificate", "validFromPeerCertificate",
  "expirationPeerCertificate", "ciphersuiteString", "tlsVersion",
  "urlEncodedPemEncodedPeerCertificate", "urlEncodedPemEncodedPeerCertificateChain",
}

local function newSsl(call, scope)
  local s, e, check = {}, scope.epoch, scope.check
  for _, name in ipairs(SSL_METHODS) do
    s[name] = function(self) check(e) return finish(call("ssl", name)) end
  end
  return s
end

local function newStreamInfo(call, scope)
  local si, e, check = {}, scope.epoch, scope.check
  local function op(name) return function(self) check(e) return finish(call("si", name)) end end
  si.protocol = op("protocol")
  si.routeName = op("routeName")
  si.requestedServerName = op("requestedServerName")
  si.downstreamLocalAddress = op("downstreamLocalAddress")
  si.downstreamRemoteAddress = op("downstreamRemoteAddress")
  si.downstreamDirectRemoteAddress = op("downstreamDirectRemoteAddress")
  si.downstreamDirectLocalAddress = op("downstreamLocalAddress")
  function si:dynamicMetadata() check(e) return newDynamicMetadata(call, scope) end
  function si:downstreamSslConnection()
    check(e)
    if finishIn(call("si", "tls")) then return newSsl(call, scope) end
    return nil
  end
  return si
end

local function newConnection(call, scope)
  local c, e, check = {}, scope.epoch, scope.check
  function c:ssl()
    check(e)
    if finishIn(call("si", "tls")) then return newSsl(call, scope) end
    return nil
  end
  return c
end

local function newHandle(call, scope)
  local H = {}
  function H:headers() return newHeaders(call, "headers", scope) end
  function H:body(always)
    local id = finishIn(call("body", always))
    if id == nil then return end
    return newBuffer(call, id, scope)
  end
  function H:bodyChunks()
    return function()
      local id = finishIn(call("chunk"))
      if id == nil then return nil end
      return newBuffer(call, id, scope)
    end
  end
  function H:trailers()
    if finishIn(call("trailers")) then return newHeaders(call, "trailers", scope) end
  end
  function H:metadata() return newStruct(finishIn(call("metadata")), scope) end
  function H:filterContext() return newStruct(finishIn(call("filterContext")), scope) end
  function H:streamInfo() return newStreamInfo(call, scope) end
  function H:connection() return newConnection(call, scope) end
  function H:logTrace(m) return finish(call("log", "trace", m)) end
  function H:logDebug(m) return finish(call("log", "debug", m)) end
  function H:logInfo(m) return finish(call("log", "info", m)) end
  function H:logWarn(m) return finish(call("log", "warn", m)) end
  function H:logErr(m) return finish(call("log", "error", m)) end
  function H:logCritical(m) return finish(call("log", "critical", m)) end
  function H:httpCall(cluster, hdrs, body, timeout, async)
    return finish(call("httpCall", cluster, hdrs, body, timeout, async))
  end
  function H:respond(hdrs, body) return finish(call("respond", hdrs, body)) end
  function H:base64Escape(s) return finish(call("base64", s)) end
  function H:clearRouteCache() return finish(call("clearRouteCache")) end
  return H
end

-- A runner: step() starts or resumes the script's coroutine; it returns
-- (true, finished) or (false, error message).
local function newRunner(fn, call)
  local scope = newScope()
  local handle = newHandle(call, scope)
  local co = create(fn)
  local started = false
  return function(...)
    local ok, err
    if started then
      ok, err = resume(co, ...)
    else
      started = true
      ok, err = resume(co, handle)
    end
    scope.epoch = scope.epoch + 1
    if not ok then return false, tostring(err) end
    return true, status(co) == "dead"
  end
end

return {newRunner = newRunner}
"""


class LuaState:
    """
    One LuaJIT state running one script (Envoy's C{ThreadLocalState} for
    one worker): the prelude, then the script's top level.

    @ivar runtime: the C{lupa} runtime.
    @ivar lib: the prelude's constructors (a Lua table).
    """

    def __init__(self, code):
        """
        @param code: the script, C{bytes}.
        @raise LuaScriptError: Envoy's C{script load error: ...} text when
            it does not compile or its top level fails.
        """
        runtime = self.runtime = _lupa.LuaRuntime(
            encoding=None, register_eval=False, register_builtins=False,
            unpack_returned_tuples=True, attribute_filter=_noAttributes)
        g = runtime.globals()
        g.python = None
        loaded = g.package.loaded
        loaded.python = None
        self.lib = runtime.execute(PRELUDE)
        load = runtime.eval("function(code) local f, err = loadstring(code) "
                            "if f == nil then return nil, err end "
                            "local ok, err2 = pcall(f) "
                            "if not ok then return nil, tostring(err2) end return true, nil end")
        ok, err = load(code)
        if not ok:
            raise LuaScriptError("script load error: " + _text(err))
        self._table = runtime.table_from
        # Envoy takes its references to the entry points once, when the
        # script is loaded.
        self._functions = {}
        for name in ENTRY_POINTS:
            f = g[name.encode("ascii")]
            if _lupa.lua_type(f) == "function":
                self._functions[name] = f

    def function(self, name):
        """The script's global function C{name} (one of L{ENTRY_POINTS}) as loaded, or C{None}."""
        return self._functions.get(name)

    def runner(self, function, call):
        """
        A coroutine running C{function(handle)}: call it with nothing to
        start, then with resume values; it returns C{(True, finished)} or
        C{(False, message)}.
        """
        return self.lib.newRunner(function, call)

    def table(self, *args):
        """A Lua table made from Python lists and dicts (see C{table_from})."""
        return self._table(*args)


def checkScript(code, path):
    """
    Load C{code} once, as Envoy does on the main thread when the config
    loads, so that a broken script fails the config.

    @raise ConfigError: naming C{path}, with Lua's message.
    """
    try:
        LuaState(code)
    except LuaScriptError as e:
        raise ConfigError("%s: %s" % (path, e))


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def toLua(state, value):
    """
    A Python value (C{dict}, C{list}, C{str}, numbers, C{bool}, C{None},
    as C{json_format} gives a C{Struct}) as a Lua value of C{state}.
    """
    if isinstance(value, dict):
        return state.table({(k.encode("utf-8") if isinstance(k, str) else k): toLua(state, v)
                            for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return state.table([toLua(state, v) for v in value])
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def fromLua(value):
    """
    A Lua value as a Python one: a table with keys 1..n is a list, any
    other a dict; strings become C{str}; C{float}s that are whole numbers
    stay C{float} (a C{Struct} has only doubles).
    """
    kind = _lupa.lua_type(value)
    if kind == "table":
        items = list(value.items())
        keys = [k for k, _ in items]
        if keys and all(isinstance(k, int) for k in keys) and sorted(keys) == list(
                range(1, len(keys) + 1)):
            return [fromLua(v) for _, v in sorted(items)]
        return {_text(k): fromLua(v) for k, v in items}
    if isinstance(value, bytes):
        return _text(value)
    if kind is not None:
        # Functions, coroutines, userdata: nothing a Struct can hold.
        return None
    return value
