"""
End-to-end comparison of C{envoy.filters.http.ext_authz} and
C{envoy.filters.network.ext_authz} with a gRPC authorization service
(C{envoy.service.auth.v3.Authorization/Check}): a real C{twistd -n envoy}
and a real Envoy 1.40 with the same config, in front of the same origin,
the same echo server and the same grpcio authorization service.

Compared for every request: the client's reply (status line, headers in
order, body), the C{CheckRequest} the service received (volatile values
masked) and the call's C{x-envoy-*} metadata, and what the origin
received; then the C{ext_authz} stats. The service allows (with header
mutations both ways), denies (with and without a status), fails
(C{UNAVAILABLE}), is slow (past the 0.5 s timeout) and, for two HTTP
listeners and one TCP listener, is down (C{failure_mode_allow},
C{status_on_error}).
"""

import json
import socket
import time

from google.protobuf.json_format import MessageToDict
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.grpc_services import ServiceSideBySide, authorizationService
from tests.e2e.configs import HTTP2, TO_ORIGIN, bootstrap, cluster, httpFilter, httpListener
from tests.e2e.harness import SharedFixture, exchangeToClose, rawRequest
from tests.e2e.test_ext_authz import _masked, _originHandler, _seen

def _hcm(name, port, authz, perRoute=""):
    return httpListener(name, port, routes=[perRoute, TO_ORIGIN], httpFilters=httpFilter(
        "envoy.filters.http.ext_authz", "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        authz))


def _tcp(name, port, authz):
    return """
  - name: %(name)s
    address:
      socket_address: { address: 127.0.0.1, port_value: %(port)d }
    filter_chains:
    - filters:
      - name: envoy.filters.network.ext_authz
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz
          stat_prefix: %(name)s
%(authz)s
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: %(name)s
          cluster: echo
""" % dict(name=name, port=port, authz=authz)


_PER_ROUTE = """
              - match: { prefix: "/public/" }
                route: { cluster: origin }
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - match: { prefix: "/ctx/" }
                route: { cluster: origin }
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: { k: v, team: blue }"""


def _grpc(cluster, indent=14):
    pad = " " * indent
    return ("%sgrpc_service:\n%s  envoy_grpc: { cluster_name: %s }\n%s  timeout: 0.5s"
            % (pad, pad, cluster, pad))


def _config(ports, origin, echo, authz, dead):
    listeners = [
        _hcm("main", ports["main"], _grpc("authz") + """
              with_request_body: { max_request_bytes: 100 }""", _PER_ROUTE),
        _hcm("plain", ports["plain"], _grpc("authz")),
        _hcm("failopen", ports["failopen"], _grpc("dead") + """
              failure_mode_allow: true"""),
        _hcm("failclosed", ports["failclosed"], _grpc("dead") + """
              status_on_error: { code: ServiceUnavailable }"""),
        _tcp("tcpok", ports["tcpok"], _grpc("authz", 10)),
        _tcp("tcpdeny", ports["tcpdeny"], _grpc("authz", 10)),
        _tcp("tcpopen", ports["tcpopen"], _grpc("dead", 10) + """
          failure_mode_allow: true"""),
        _tcp("tcpclosed", ports["tcpclosed"], _grpc("dead", 10))]
    return serviceConfig(ports["admin"], listeners, origin, echo, "authz", authz, dead)


def serviceConfig(admin, listeners, origin, echo, serviceName, service, dead, head=""):
    """
    The bootstrap around C{listeners}: the admin, and the clusters origin,
    echo, the service (HTTP/2) and dead (HTTP/2, nothing listening).
    """
    return bootstrap(listeners, [cluster("origin", origin), cluster("echo", echo),
                                 cluster(serviceName, service, HTTP2),
                                 cluster("dead", dead, HTTP2)], admin=admin, extra=head)


def _option(options, key, value, append=None, action=None):
    option = options.add()
    option.header.key = key
    option.header.value = value
    if append is not None:
        option.append.value = append
    if action is not None:
        option.append_action = action


#: Destination ports whose TCP checks are denied (both deployments').
_DENIED_PORTS = set()


def _answer(request, context):
    from envoy.service.auth.v3 import external_auth_pb2
    import grpc

    response = external_auth_pb2.CheckResponse()
    http = request.attributes.request.http
    path = http.path
    if not http.method:
        if request.attributes.destination.address.socket_address.port_value in _DENIED_PORTS:
            response.status.code = 7
        return response
    if "slow" in path:
        time.sleep(0.6)
    if "err" in path:
        context.abort(grpc.StatusCode.UNAVAILABLE, "authz down")
    if "deny-default" in path:
        response.status.code = 7
    elif "deny" in path:
        response.status.code = 7
        denied = response.denied_response
        denied.status.code = 401
        denied.body = "go away"
        _option(denied.headers, "x-deny", "1")
        _option(denied.headers, "x-deny", "2")
        _option(denied.headers, "x-d2", "1", True)
    else:
        ok = response.ok_response
        _option(ok.headers, "x-set", "n")
        _option(ok.headers, "x-app", "n", True)
        _option(ok.headers, "x-app2", "n", True)
        _option(ok.headers, "x-setf", "n", False)
        _option(ok.headers, "x-act", "n", None, 1)
        _option(ok.headers, "x-new", "n", None, 3)
        ok.headers_to_remove.append("x-user")
        _option(ok.response_headers_to_add, "x-resp", "r")
        _option(ok.response_headers_to_add, "x-o", "r", True)
        _option(ok.response_headers_to_add, "x-o2", "r", False)
        _option(ok.response_headers_to_add, "x-o3", "r", None, 2)
        _option(ok.response_headers_to_add, "x-o4", "r", None, 1)
        _option(ok.response_headers_to_add, "x-o5", "r", None, 3)
        _option(ok.response_headers_to_add, "x-content-type", "r", None, 3)
    return response


def _originWithHeaders(recorder):
    handler = _originHandler(recorder)

    class Handler(handler):
        def send_header(self, name, value):
            if name == "content-type":
                for extra in ("x-o", "x-o2", "x-o3", "x-o4"):
                    handler.send_header(self, extra, "o")
            handler.send_header(self, name, value)

    return Handler


_PORTS = ("admin", "main", "plain", "failopen", "failclosed", "tcpok", "tcpdeny", "tcpopen",
          "tcpclosed")


def _checkSeen(records, ports):
    """The check requests with volatile values masked."""
    names = {port: name for name, port in ports.items()}
    out = []
    for request, metadata in records:
        seen = MessageToDict(request)
        attributes = seen["attributes"]
        attributes["source"]["address"]["socketAddress"]["portValue"] = "P"
        destination = attributes["destination"]["address"]["socketAddress"]
        destination["portValue"] = names.get(destination["portValue"])
        request_ = attributes.get("request", {})
        request_.pop("time", None)
        http = request_.get("http")
        if http is not None:
            http["id"] = "I"
            http["host"] = "H"
            http["headers"][":authority"] = "H"
            http["headers"]["x-request-id"] = "R"
        out.append((json.dumps(seen, sort_keys=True),
                    sorted((k, v) for k, v in metadata.items() if k.startswith("x-envoy"))))
    return out


_USER = ["x-user: bob", "x-set: a", "x-app: a", "x-act: a", "x-setf: a", "Cookie: c=1",
         "x-multi: 1", "x-multi: 2"]

HTTP_CASES = (
    [("main", rawRequest(path, *_USER)) for path in (
        "/allow/a?x=1", "/deny/x", "/deny-default/x", "/err/x", "/public/deny/x",
        "/ctx/allow/x")]
    + [("main", rawRequest("/allow/echo", method="POST", body=b"hello body")),
       ("main", rawRequest("/deny/echo", method="POST", body=b"a" * 200)),
       ("main", b"POST /allow/echo HTTP/1.1\r\nhost: e\r\nconnection: close\r\n"
                b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"),
       ("plain", rawRequest("/allow/echo", method="POST", body=b"not sent")),
       ("plain", rawRequest("/slow/x")),
       ("failopen", rawRequest("/x/echo")),
       ("failclosed", rawRequest("/x/echo"))])

TCP_CASES = ("tcpok", "tcpdeny", "tcpopen", "tcpclosed")


def _tcpExchange(port):
    """Send a line, half-close, read what comes back until the close."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        try:
            sock.sendall(b"ping\n")
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            # The proxy reset the connection first.
            return b"<reset>"
        chunks = []
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                chunks.append(b"<reset>")
                break
            if not piece:
                break
            chunks.append(piece)
        return b"".join(chunks)
    finally:
        sock.close()


def _configDenying(ports, *args):
    _DENIED_PORTS.add(ports["tcpdeny"])
    return _config(ports, *args)


class ExtAuthzGrpcSideBySideTests(ServiceSideBySide, SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same gRPC ext_authz config, the same requests."""

    portNames = _PORTS
    makeService = staticmethod(lambda: authorizationService(_answer))
    makeConfig = staticmethod(_configDenying)
    originHandler = staticmethod(_originWithHeaders)
    summarize = staticmethod(_checkSeen)
    statsFilter = staticmethod(lambda name: "ext_authz." in name)

    def run_(self, deployment, listener, raw):
        reply = _masked(exchangeToClose(deployment.ports[listener], raw))
        if b"/slow/" in raw:
            # The service answers after the proxy gave up.
            time.sleep(0.15)
        return (reply, self.serviceSeen(deployment), _seen(self.originSeen.take()))

    def test_http(self):
        """
        Every HTTP request: the same reply, the same check request and
        metadata, the same request at the origin.
        """
        for listener, raw in HTTP_CASES:
            expected = self.run_(self.envoy, listener, raw)
            got = self.run_(self.txenvoy, listener, raw)
            self.assertEqual(got, expected, raw)

    def test_network(self):
        """
        Every TCP listener: the same bytes back (echoed when allowed,
        nothing when the connection is closed) and the same check request.
        """
        self.assertSameTcp(TCP_CASES, _tcpExchange)

    def test_stats(self):
        """After the same traffic, the same C{ext_authz} stats."""
        for listener, raw in HTTP_CASES[:4]:
            for deployment in (self.envoy, self.txenvoy):
                self.run_(deployment, listener, raw)
        for listener in TCP_CASES:
            for deployment in (self.envoy, self.txenvoy):
                _tcpExchange(deployment.ports[listener])
        self.assertSameStats()
