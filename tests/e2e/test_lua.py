"""
End-to-end comparison of C{envoy.filters.http.lua}: a real C{twistd -n
envoy} and a real Envoy 1.40 run the same config (one script using most of
the stream handle API, per-route overrides, C{source_codes}) before the
same origin and their own side service (the C{httpCall} cluster). Every
reply (status line, headers in order, body), what the origin and the side
service received, and the C{lua} stats must be the same.
"""

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import (
    SharedFixture,
    adminStats,
    exchangeOne as _exchange,
    freePort,
    httpOrigin,
    runTwistd,
    startProxy,
    stopAll,
)


class _Origin(BaseHTTPRequestHandler):
    """Echoes the request as JSON; C{x-reply-*} request headers are answered back."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("transfer-encoding") == "chunked":
            body = _readChunked(self.rfile)
        seen = {"method": self.command, "path": self.path, "body": body.decode("latin-1"),
                "headers": [[k.lower(), v] for k, v in self.headers.items()
                            if k.lower() != "x-request-id"]}
        self.server.seen.append(seen)
        out = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        for k, v in self.headers.items():
            if k.lower().startswith("x-reply-"):
                self.send_header(k.lower()[8:], v)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = _answer


def _readChunked(rfile):
    body = b""
    while True:
        size = int(rfile.readline().split(b";")[0], 16)
        if not size:
            while rfile.readline() not in (b"\r\n", b""):
                pass
            return body
        body += rfile.read(size)
        rfile.readline()


SCRIPT = r"""
calls = 0
function envoy_on_request(h)
  calls = calls + 1
  local hd = h:headers()
  local path = hd:get(":path")
  hd:add("x-calls", tostring(calls))
  if path == "/err" then error("boom") end
  if path == "/respond" then
    h:respond({[":status"] = "403", ["x-lua"] = "yes"}, "nope")
  end
  if path == "/respond-bad" then h:respond({[":status"] = "99"}, "x") end
  if path == "/body" then
    local b = h:body()
    local s = b:getBytes(0, b:length())
    b:setBytes(string.upper(s) .. "!")
    h:headers():add("x-len", tostring(b:length()))
  end
  if path == "/dead" then
    h:body()
    hd:add("x-dead", "1")
  end
  if path == "/nobody" then
    hd:add("x-body", tostring(h:body() == nil))
  end
  if path == "/chunks" then
    local n = 0
    for chunk in h:bodyChunks() do n = n + chunk:length() end
    h:logInfo("chunks " .. n)
  end
  if path == "/call" then
    local rh, rb = h:httpCall("side", {[":method"] = "POST", [":path"] = "/side",
      [":authority"] = "side.example", ["x-a"] = "1"}, "ping", 2000)
    hd = h:headers()
    hd:add("x-side-status", rh[":status"])
    hd:add("x-side-type", rh["content-type"])
    hd:add("x-side-body", rb)
  end
  if path == "/call-respond" then
    local rh, rb = h:httpCall("side", {[":method"] = "GET", [":path"] = "/deny",
      [":authority"] = "side.example"}, nil, 2000)
    h:respond({[":status"] = rh[":status"], ["x-from"] = "side"}, rb)
  end
  if path == "/call-down" then
    local rh, rb = h:httpCall("down", {[":method"] = "GET", [":path"] = "/",
      [":authority"] = "down"}, nil, 2000)
    h:headers():add("x-down", rh[":status"] .. " " .. rb)
  end
  if path == "/async" then
    h:httpCall("side", {[":method"] = "POST", [":path"] = "/async",
      [":authority"] = "side.example"}, "fire", 2000, true)
  end
  if path == "/nocluster" then
    h:httpCall("nope", {[":method"] = "GET", [":path"] = "/", [":authority"] = "x"}, nil, 100)
  end
  if path == "/noauthority" then
    h:httpCall("side", {[":method"] = "GET", [":path"] = "/"}, nil, 100)
  end
  if path == "/iter" then
    local t = {}
    for k, v in pairs(hd) do
      if k ~= "x-request-id" then t[#t + 1] = k .. "=" .. v end
    end
    hd:add("x-iter", table.concat(t, ";"))
    hd:add("x-multi", hd:get("x-m") .. "|" .. hd:getNumValues("x-m") .. "|" ..
      hd:getAtIndex("x-m", 1) .. "|" .. tostring(hd:getAtIndex("x-m", 5)))
    hd:replace("x-r", "new")
    hd:remove("x-drop")
  end
  if path == "/meta" then
    local m = h:metadata()
    hd:add("x-team", tostring(m:get("team")))
    local si = h:streamInfo()
    hd:add("x-proto", si:protocol())
    hd:add("x-ssl", tostring(h:connection():ssl()))
    si:dynamicMetadata():set("acme", "k", "v")
    hd:add("x-dyn", si:dynamicMetadata():get("acme")["k"])
    hd:add("x-ctx", tostring(h:filterContext():get("who")))
  end
  if path == "/late" then
    for chunk in h:bodyChunks() do end
    hd:add("x-late", "1")
  end
end

function envoy_on_response(h)
  local hd = h:headers()
  hd:add("x-resp-status", hd:get(":status"))
  if hd:get("x-rewrite") then
    local b = h:body()
    b:setBytes("rewritten:" .. b:length())
  end
  if hd:get("x-respond") then h:respond({[":status"] = "200"}, "no") end
  if hd:get("x-trailers") then hd:add("x-t", tostring(h:trailers())) end
end
"""

ROUTE = r"""
function envoy_on_route(route_handle)
  local want = route_handle:headers():get("x-cs")
  if want == "err" then error("no route") end
  if want == "number" then return 7 end
  return want
end
"""

OTHER = r"""
function envoy_on_request(h) h:headers():add("x-other", "yes") end
"""

CONFIG = bootstrap(
    listeners=[
        httpListener("lua", "%(main)d", statPrefix="ingress", routes="""
            - match: { prefix: "/off" }
              route: { cluster: origin }
              typed_per_filter_config:
                envoy.filters.http.lua:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute
                  disabled: true
            - match: { prefix: "/named" }
              route: { cluster: origin }
              typed_per_filter_config:
                envoy.filters.http.lua:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute
                  name: other
            - match: { prefix: "/unnamed" }
              route: { cluster: origin }
              typed_per_filter_config:
                envoy.filters.http.lua:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute
                  name: missing
            - match: { prefix: "/inline" }
              route: { cluster: origin }
              typed_per_filter_config:
                envoy.filters.http.lua:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute
                  source_code:
                    inline_string: |
                      function envoy_on_response(h) h:headers():add("x-inline", "r") end
            - match: { prefix: "/meta" }
              route: { cluster: origin }
              metadata:
                filter_metadata:
                  envoy.filters.http.lua: { team: blue }
              typed_per_filter_config:
                envoy.filters.http.lua:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute
                  name: main
                  filter_context: { who: ctx }
            - match: { prefix: "/cs" }
              route:
                inline_cluster_specifier_plugin:
                  extension:
                    name: envoy.router.cluster_specifier_plugin.lua
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.router.cluster_specifiers.lua.v3.LuaConfig
                      source_code: { inline_string: %(route)s }
                      default_cluster: origin
            - match: { prefix: "/named-cs" }
              route: { cluster_specifier_plugin: by-header }
            - match: { prefix: "/" }
              route: { cluster: origin }
            """, routeConfig="""
            cluster_specifier_plugins:
            - extension:
                name: by-header
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.router.cluster_specifiers.lua.v3.LuaConfig
                  source_code: { inline_string: %(route)s }
                  default_cluster: side
            """, httpFilters="""
            - name: envoy.filters.http.lua
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
                default_source_code:
                  inline_string: %(script)s
                source_codes:
                  other: { inline_string: %(other)s }
                  main: { inline_string: %(script)s }
            """),
    ],
    clusters=[cluster("origin"), cluster("side"), cluster("down")])


class _Side(BaseHTTPRequestHandler):
    """The C{httpCall} target: records what it got, answers C{pong} (C{/deny}: 401)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({
            "method": self.command, "path": self.path, "body": body.decode("latin-1"),
            "headers": sorted([k.lower(), v] for k, v in self.headers.items()
                              if k.lower() != "x-request-id")})
        status, out = (401, b"denied") if self.path == "/deny" else (200, b"pong")
        self.send_response(status)
        self.send_header("content-type", "text/x-side")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer


def _request(path, *headers, method="GET", body=None, chunks=None, trailers=()):
    lines = ["%s %s HTTP/1.1" % (method, path), "host: example.com"]
    lines.extend(headers)
    if chunks is not None:
        lines.append("transfer-encoding: chunked")
        data = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n"
        data += b"".join(t.encode() + b"\r\n" for t in trailers) + b"\r\n"
    else:
        data = body or b""
        if body is not None or method != "GET":
            lines.append("content-length: %d" % (len(data),))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


CASES = [
    _request("/plain"),
    _request("/err"),
    _request("/respond"),
    _request("/respond-bad"),
    _request("/body", method="POST", body=b"hello"),
    _request("/body", method="POST", chunks=[b"ab", b"cd"]),
    _request("/dead", method="POST", body=b"x"),
    _request("/nobody"),
    _request("/chunks", method="POST", chunks=[b"one", b"two", b"three"]),
    _request("/call"),
    _request("/call", method="POST", body=b"held while the call runs"),
    _request("/call-respond"),
    _request("/call-down"),
    _request("/async"),
    _request("/nocluster"),
    _request("/noauthority"),
    _request("/iter?q=1", "x-m: a", "x-m: b", "x-r: old", "x-r: older", "x-drop: 1"),
    _request("/meta"),
    _request("/off"),
    _request("/named"),
    _request("/unnamed"),
    _request("/inline"),
    _request("/plain", "x-reply-x-rewrite: 1"),
    _request("/plain", "x-reply-x-respond: 1"),
    _request("/plain", "x-reply-x-trailers: 1"),
    _request("/cs"),
    _request("/cs", "x-cs: side"),
    _request("/cs", "x-cs: err"),
    _request("/cs", "x-cs: number"),
    _request("/cs", "x-cs: nosuch"),
    _request("/named-cs"),
    _request("/named-cs", "x-cs: origin"),
]




def _masked(raw):
    raw = re.sub(rb"date: [^\r]*\r\n", b"", raw)
    raw = re.sub(rb"x-envoy-upstream-service-time: \d+", b"x-envoy-upstream-service-time: T", raw)
    raw = re.sub(rb'"content-length": "\d+"', b'"content-length": "N"', raw)
    return re.sub(rb"content-length: \d+", b"content-length: N", raw)


def _maskedSeen(seen):
    out = []
    for entry in seen:
        entry = dict(entry)
        entry["headers"] = [[k, "T" if k == "x-envoy-expected-rq-timeout-ms" else v]
                            for k, v in entry["headers"]]
        out.append(entry)
    return out


_CLUSTER_STATS = frozenset(
    "cluster.%s.upstream_rq_%s" % (cluster, name) for cluster in ("side", "down")
    for name in ("total", "completed", "200", "2xx", "401", "4xx", "503", "5xx", "timeout"))


class _Deployment:
    def __init__(self, real, origin, down):
        self.side = httpOrigin(_Side)
        self.side.seen = []
        self.admin, self.port = freePort(), freePort()
        config = CONFIG % dict(admin=self.admin, main=self.port, origin=origin, down=down,
                               side=self.side.server_address[1], script=json.dumps(SCRIPT),
                               other=json.dumps(OTHER), route=json.dumps(ROUTE))
        try:
            self.proxy = startProxy(real, config, self.port, self.admin)
        except BaseException:
            self.stopSide()
            raise

    def stats(self):
        return {n: v for n, v in adminStats(self.admin).items()
                if n.startswith("http.ingress.lua.") or n in _CLUSTER_STATS}

    def stopSide(self):
        self.side.shutdown()
        self.side.server_close()

    def stop(self):
        self.proxy.stop()
        self.stopSide()


class LuaSideBySideTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy with the same Lua filter config."""

    @classmethod
    def startFixture(cls):
        cls.origin = httpOrigin(_Origin)
        cls.origin.seen = []
        down = socket.socket()
        down.bind(("127.0.0.1", 0))
        cls.downPort = down.getsockname()[1]
        down.close()
        cls.envoy = cls.txenvoy = None
        try:
            cls.envoy = _Deployment(True, cls.origin.server_address[1], cls.downPort)
            cls.txenvoy = _Deployment(False, cls.origin.server_address[1], cls.downPort)
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        stopAll(cls.envoy, cls.txenvoy, cls.origin)

    def _side(self, deployment, count):
        deadline = time.time() + 5
        while len(deployment.side.seen) < count and time.time() < deadline:
            time.sleep(0.02)
        return _maskedSeen(deployment.side.seen)

    def test_sideBySide(self):
        """
        Every reply alike, what the origin and the side service saw alike,
        then the same stats: a runtime error lets the request through and
        counts in C{lua.errors}; C{respond} replies locally and runs the
        response script; globals persist per worker.
        """
        for raw in CASES:
            del self.origin.seen[:]
            expected = _masked(_exchange(self.envoy.port, raw))
            envoySaw = _maskedSeen(self.origin.seen)
            del self.origin.seen[:]
            got = _masked(_exchange(self.txenvoy.port, raw))
            self.assertEqual(got, expected, raw + b"\n" + expected + open(self.envoy.proxy.log.name, "rb").read()[-600:])
            self.assertEqual(_maskedSeen(self.origin.seen), envoySaw, raw)
        count = len(self.envoy.side.seen)
        self.assertEqual(self._side(self.txenvoy, count), self._side(self.envoy, count))
        self.assertEqual(self.txenvoy.stats(), self.envoy.stats())


BROKEN = """
static_resources:
  listeners:
  - name: lua
    address:
      socket_address: { address: 127.0.0.1, port_value: 1 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config: {}
          http_filters:
          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code:
                inline_string: "function envoy_on_request(h)\\n  local x = = 1\\nend"
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


class LuaConfigErrorTests(SynchronousTestCase):
    """A script that does not compile fails the config, as in Envoy."""

    def test_syntaxError(self):
        """
        Envoy's C{script load error: [string "..."]:2: unexpected symbol
        near '='}, with the field path, exit 1.
        """
        import os
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(BROKEN)
        try:
            rc, out, err = runTwistd(["--mode", "validate", "-c", f.name])
        finally:
            os.unlink(f.name)
        self.assertEqual(rc, 1)
        self.assertIn("http_filters[0].typed_config.default_source_code: script load error: "
                      "[string \"function envoy_on_request(h)...\"]:2: unexpected symbol "
                      "near '='", out + err)
