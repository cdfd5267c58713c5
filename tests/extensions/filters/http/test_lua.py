"""
Tests for L{txenvoy.extensions.filters.http.lua}, with fake callbacks.
What they check was observed on Envoy 1.40 (C{tests/e2e/test_lua.py}
runs both side by side).
"""

import json

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError
from txenvoy.http.filter import FilterDataStatus, FilterHeadersStatus, FilterTrailersStatus
from txenvoy.http.headers import HeaderMap
from txenvoy.interfaces import IHttpFilterFactory

from tests.extensions.filters.http.fakes import (
    compileFilter,
    makeFilter,
    request,
    response,
)

LUA = "envoy.extensions.filters.http.lua.v3.Lua"
PREFIX = "http.ingress_http.lua."


def compileScript(script, extra=""):
    return compileFilter(LUA, "default_source_code: {inline_string: %s}\n%s"
                         % (json.dumps(script), extra))


class LuaConfigTests(SynchronousTestCase):
    """Loading scripts."""

    def test_factory(self):
        """The config is an L{IHttpFilterFactory}."""
        verifyObject(IHttpFilterFactory, compileScript("function envoy_on_request(h) end"))

    def test_syntaxError(self):
        """Envoy's C{script load error}, with LuaJIT's message and the field path."""
        e = self.assertRaises(ConfigError, compileScript, "x = = 1")
        self.assertIn("default_source_code: script load error: [string \"x = = 1\"]:1: "
                      "unexpected symbol near '='", str(e))

    def test_topLevelError(self):
        """A failing top level fails the config too."""
        e = self.assertRaises(ConfigError, compileScript, "error('top')")
        self.assertIn("script load error: [string \"error('top')\"]:1: top", str(e))

    def test_sourceCodesChecked(self):
        """Every one of C{source_codes} is loaded when the config loads."""
        e = self.assertRaises(ConfigError, compileFilter, LUA,
                              "source_codes: {bad: {inline_string: 'function ('}}")
        self.assertIn("source_codes[bad]: script load error", str(e))

    def test_envoyLibraries(self):
        """
        Envoy opens every standard library (C{luaL_openlibs}), LuaJIT's
        C{jit} and C{bit} too; nothing of C{lupa}'s C{python} is left.
        """
        config = compileScript(
            "function envoy_on_request(h) h:headers():add('x-libs', "
            "type(os) .. type(io) .. type(debug) .. type(jit) .. type(bit) .. "
            "type(python) .. type(package.loaded.python)) end")
        f, callbacks = makeFilter(config, LUA)
        head = request()
        self.assertEqual(f.decodeHeaders(head, True), FilterHeadersStatus.Continue)
        self.assertEqual(head.headers.get(b"x-libs"), b"tabletabletabletabletablenilnil")

    def test_pythonObjectsOpaque(self):
        """A Python function reached through C{debug} shows no attributes."""
        config = compileScript(
            "function envoy_on_request(h)\n"
            "  local f = h.headers\n"
            "  local _, call = debug.getupvalue(f, 2)\n"
            "  local ok, err = pcall(function() return call.__globals__ end)\n"
            "  h:headers():add('x-ok', tostring(ok))\n"
            "end")
        f, callbacks = makeFilter(config, LUA)
        head = request()
        f.decodeHeaders(head, True)
        self.assertEqual(head.headers.get(b"x-ok"), b"false")


class LuaStreamTests(SynchronousTestCase):
    """The stream handle API."""

    def test_statePerWorker(self):
        """Globals persist between the streams of one worker, as Envoy's per-worker state."""
        config = compileScript("n = 0\nfunction envoy_on_request(h) n = n + 1 "
                               "h:headers():add('x-n', tostring(n)) end")
        seen = []
        first = None
        for _ in range(3):
            f, callbacks = makeFilter(config, LUA)
            first = first or callbacks
            head = request()
            f.decodeHeaders(head, True)
            seen.append(head.headers.get(b"x-n"))
        self.assertEqual(seen, [b"1", b"2", b"3"])
        # Stats objects are resolved once per worker: the first stream's store.
        self.assertEqual(first.counter(PREFIX + "executions"), 3)

    def test_runtimeErrorContinues(self):
        """Envoy 1.40 logs a runtime error, counts it, and lets the request through."""
        config = compileScript("function envoy_on_request(h) error('boom') end")
        f, callbacks = makeFilter(config, LUA)
        self.assertEqual(f.decodeHeaders(request(), True), FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.counter(PREFIX + "errors"), 1)
        self.assertEqual(callbacks.localReplies, [])

    def test_bodyBuffered(self):
        """C{body()} holds the headers and buffers until the end, then rewrites it."""
        config = compileScript(
            "function envoy_on_request(h)\n"
            "  local b = h:body()\n"
            "  b:setBytes(b:getBytes(0, b:length()) .. '!')\n"
            "end")
        f, callbacks = makeFilter(config, LUA)
        head = request("POST", headers=[("content-length", "4")])
        self.assertEqual(f.decodeHeaders(head, False), FilterHeadersStatus.StopIteration)
        self.assertEqual(f.decodeData(b"ab", False), FilterDataStatus.StopIterationAndBuffer)
        callbacks.decodingBuffered = b"ab"
        self.assertEqual(f.decodeData(b"cd", True), (FilterDataStatus.Continue, b""))
        self.assertEqual(callbacks.decodingBuffered, b"abcd!")
        self.assertEqual(head.headers.get(b"content-length"), b"5")

    def test_deadObjects(self):
        """Objects from before a yield are dead after it (Envoy's LuaDeathRef)."""
        config = compileScript(
            "function envoy_on_request(h)\n"
            "  local hd = h:headers()\n"
            "  h:body()\n"
            "  hd:add('x', 'y')\n"
            "end")
        f, callbacks = makeFilter(config, LUA)
        head = request("POST")
        f.decodeHeaders(head, False)
        callbacks.decodingBuffered = b""
        self.assertEqual(f.decodeData(b"x", True), (FilterDataStatus.Continue, b""))
        self.assertEqual(callbacks.counter(PREFIX + "errors"), 1)
        self.assertNotIn(b"x", head.headers)

    def test_bodyChunks(self):
        """C{bodyChunks()} sees each chunk as it passes, and may change it."""
        config = compileScript(
            "function envoy_on_request(h)\n"
            "  for c in h:bodyChunks() do c:setBytes(string.upper(c:getBytes(0, c:length()))) end\n"
            "  h:logInfo('done')\n"
            "end")
        f, callbacks = makeFilter(config, LUA)
        self.assertEqual(f.decodeHeaders(request("POST"), False), FilterHeadersStatus.Continue)
        self.assertEqual(f.decodeData(b"ab", False), (FilterDataStatus.Continue, b"AB"))
        self.assertEqual(f.decodeData(b"cd", True), (FilterDataStatus.Continue, b"CD"))
        self.assertEqual(callbacks.counter(PREFIX + "errors"), 0)

    def test_trailers(self):
        """C{trailers()} waits for the end of the stream."""
        config = compileScript(
            "function envoy_on_response(h)\n"
            "  local t = h:trailers()\n"
            "  t:add('x-seen', t:get('grpc-status'))\n"
            "end")
        f, callbacks = makeFilter(config, LUA)
        self.assertEqual(f.encodeHeaders(response(200), False), FilterHeadersStatus.Continue)
        self.assertEqual(f.encodeData(b"x", False), FilterDataStatus.Continue)
        trailers = HeaderMap([(b"grpc-status", b"0")])
        self.assertEqual(f.encodeTrailers(trailers), FilterTrailersStatus.Continue)
        self.assertEqual(trailers.get(b"x-seen"), b"0")

    def test_respondInResponsePath(self):
        """Envoy refuses C{respond()} in the response direction."""
        config = compileScript("function envoy_on_response(h) h:respond({[':status']='200'}) end")
        f, callbacks = makeFilter(config, LUA)
        self.assertEqual(f.encodeHeaders(response(200), True), FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.counter(PREFIX + "errors"), 1)
        self.assertEqual(callbacks.localReplies, [])

    def test_respond(self):
        """C{respond()} is a local reply with details C{lua_response}."""
        config = compileScript(
            "function envoy_on_request(h) h:respond({[':status']='418', ['x-a']='b'}, 'tea') end")
        f, callbacks = makeFilter(config, LUA)
        self.assertEqual(f.decodeHeaders(request(), True), FilterHeadersStatus.StopIteration)
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.body, reply.details), (418, b"tea", "lua_response"))
        self.assertEqual(reply.headers.headers.get(b"x-a"), b"b")

    def test_unexpectedYield(self):
        """A script that yields on its own is an error, as in Envoy."""
        config = compileScript("function envoy_on_request(h) coroutine.yield() end")
        f, callbacks = makeFilter(config, LUA)
        self.assertEqual(f.decodeHeaders(request(), True), FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.counter(PREFIX + "errors"), 1)

    def test_dynamicMetadata(self):
        """C{streamInfo():dynamicMetadata()} reads and writes the stream's metadata."""
        config = compileScript(
            "function envoy_on_request(h)\n"
            "  local m = h:streamInfo():dynamicMetadata()\n"
            "  m:set('acme', 'n', 3)\n"
            "  m:set('acme', 't', {a = 'b'})\n"
            "  h:headers():add('x-n', tostring(m:get('acme')['n']))\n"
            "end")
        f, callbacks = makeFilter(config, LUA)
        head = request()
        f.decodeHeaders(head, True)
        self.assertEqual(callbacks.streamInfo.dynamicMetadata,
                         {"acme": {"n": 3, "t": {"a": "b"}}})
        self.assertEqual(head.headers.get(b"x-n"), b"3")


class LuaSslTests(SynchronousTestCase):
    """C{connection():ssl()} on plain and TLS connections."""

    SCRIPT = (
        "function envoy_on_request(h)\n"
        "  local ssl = h:connection():ssl()\n"
        "  if ssl == nil then h:headers():add('x-ssl', 'none') return end\n"
        "  h:headers():add('x-subject', ssl:subjectPeerCertificate())\n"
        "  h:headers():add('x-dns', table.concat(ssl:dnsSansPeerCertificate(), ','))\n"
        "end")

    def run_(self, ssl):
        from txenvoy.testing.http_filter import FakeStreamFilterCallbacks

        config = compileScript(self.SCRIPT)
        callbacks = FakeStreamFilterCallbacks(filterConfigName="envoy.filters.http.lua")
        if ssl is not None:
            callbacks.connection.ssl = ssl
        f = config.createFilter(callbacks)
        head = request()
        f.decodeHeaders(head, True)
        return head.headers

    def test_plain(self):
        """No TLS: C{ssl()} is nil."""
        self.assertEqual(self.run_(None).get(b"x-ssl"), b"none")

    def test_tls(self):
        """A TLS peer's certificate details, as the connection's SslConnectionInfo has them."""
        from txenvoy.testing import FakeSsl

        headers = self.run_(FakeSsl(dnsSans=["a.example", "b.example"], subject="CN=client"))
        self.assertEqual(headers.get(b"x-subject"), b"CN=client")
        self.assertEqual(headers.get(b"x-dns"), b"a.example,b.example")
