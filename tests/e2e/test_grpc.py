"""
gRPC through a real C{twistd -n envoy}, side by side with Envoy 1.40 on
the same config: a C{grpcio} client and server, the cluster speaking
HTTP/2 upstream (C{explicit_http_config.http2_protocol_options}); unary
and streaming calls with their trailers and metadata, error statuses, and
one upstream connection carrying every stream.
"""

import base64
import re
import socket
import time
from concurrent import futures

import grpc
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import SharedFixture, adminStats, freePort, startProxy

_SERVICE = "test.Echo"

# Metadata that differs from one run to the next.
_VARYING = frozenset(["date", "x-envoy-upstream-service-time"])


def _stable(metadata):
    return [(k, v) for k, v in metadata or () if k not in _VARYING]


def _unary(request, context):
    """Echo the request; metadata x-fail asks for an error status."""
    metadata = dict(context.invocation_metadata())
    if "x-fail" in metadata:
        context.set_trailing_metadata((("x-detail", "failed"),))
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to fail")
    context.set_trailing_metadata((("x-trailer", "t1"), ("x-bin", b"\x00\x01")))
    return b"echo:" + request


def _serverStream(request, context):
    for i in range(int(request or b"3")):
        yield b"item%d" % (i,)


def _clientStream(requests, context):
    return b"+".join(requests)


def _bidi(requests, context):
    for r in requests:
        yield r.upper()


_attempts = {}


def _flaky(request, context):
    """UNAVAILABLE (trailers-only) for the first two attempts of a key, then OK."""
    key = dict(context.invocation_metadata()).get("x-key")
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] <= 2:
        context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
    return b"attempt %d" % (_attempts[key],)


def _failLate(request, context):
    """One message, then an error status in the trailers."""
    yield b"partial"
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "failed late")


def _sleep(request, context):
    time.sleep(1.0)
    return b"late"


def _extraHandlers():
    return (grpc.method_handlers_generic_handler(
                "retry.Svc", {"Flaky": grpc.unary_unary_rpc_method_handler(_flaky)}),
            grpc.method_handlers_generic_handler(
                "slow.Svc", {"Sleep": grpc.unary_unary_rpc_method_handler(_sleep),
                             "FailLate": grpc.unary_stream_rpc_method_handler(_failLate)}))


def _handler():
    return grpc.method_handlers_generic_handler(_SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_serverStream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_clientStream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        "Flaky": grpc.unary_unary_rpc_method_handler(_flaky),
    })


def grpcConfig(port, adminPort, backendPort):
    return bootstrap(
        listeners=[
            httpListener("grpc", "%(port)d", routes="""
                - match: {prefix: "/test."}
                  route: {cluster: backend}
                - match: {prefix: "/retry."}
                  route:
                    cluster: backend
                    retry_policy: {retry_on: unavailable, num_retries: 2}
                - match: {prefix: "/slow."}
                  route:
                    cluster: backend
                    max_stream_duration: {grpc_timeout_header_max: 0.3s}
                - match: {prefix: "/dead."}
                  route: {cluster: dead}
                - match: {prefix: "/limited."}
                  route: {cluster: limited, prefix_rewrite: "/test."}
                - match: {prefix: "/direct."}
                  direct_response: {status: 200, body: {inline_string: "hello"}}
                """, httpFilters="""
                - name: envoy.filters.http.grpc_http1_bridge
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_http1_bridge.v3.Config
                    upgrade_protobuf_to_grpc: true
                    ignore_query_parameters: true
                - name: envoy.filters.http.grpc_web
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb
                """, hcm="""
                codec_type: AUTO
                internal_address_config:
                  cidr_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]
                """),
        ],
        clusters=[
            cluster("backend", extra="""
                typed_extension_protocol_options:
                  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                    explicit_http_config:
                      http2_protocol_options: {}
                """),
            cluster("limited", "%(backend)d", extra="""
                typed_extension_protocol_options:
                  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                    common_http_protocol_options: {max_requests_per_connection: 2}
                    explicit_http_config:
                      http2_protocol_options:
                        connection_keepalive: {interval: 30s, timeout: 5s}
                """),
            cluster("dead"),
        ]) % {"port": port, "admin": adminPort, "backend": backendPort, "dead": freePort()}


def _recvResponse(sock):
    """
    One HTTP/1.1 response, read to its end by its framing (the proxies
    close only after their delayed close timeout).
    """
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = re.search(rb"\r\ncontent-length: (\d+)\r\n", head + b"\r\n")
            if length is not None and len(body) >= int(length.group(1)):
                return data
            if b"transfer-encoding: chunked" in head and (
                    body == b"0\r\n\r\n" or body.endswith(b"\r\n0\r\n\r\n")):
                return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


class _Side:
    def __init__(self, real, backendPort):
        self.port = freePort()
        self.adminPort = freePort()
        self.proxy = startProxy(real, grpcConfig(self.port, self.adminPort, backendPort),
                                self.port, self.adminPort)
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % (self.port,))

    def stop(self):
        self.channel.close()
        self.proxy.stop()


class GrpcComparisonTests(SharedFixture, SynchronousTestCase):
    """grpcio through Envoy 1.40 and txenvoy to one grpcio server."""

    @classmethod
    def startFixture(cls):
        cls.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        cls.server.add_generic_rpc_handlers((_handler(),) + _extraHandlers())
        cls.backendPort = cls.server.add_insecure_port("127.0.0.1:0")
        cls.server.start()
        cls.sides = []
        try:
            cls.sides.append(_Side(True, cls.backendPort))
            cls.sides.append(_Side(False, cls.backendPort))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for side in cls.sides:
            side.stop()
        cls.server.stop(None)

    def both(self, call):
        """C{call(channel)} through Envoy, then txenvoy: both results."""
        return [call(side.channel) for side in self.sides]

    def test_unary(self):
        """A unary call: the reply and the trailing metadata, binary too."""
        def call(channel):
            method = channel.unary_unary("/%s/Unary" % (_SERVICE,))
            reply, c = method.with_call(b"hi", timeout=10)
            trailers = _stable(c.trailing_metadata())
            return reply, c.code(), trailers
        envoy, tx = self.both(call)
        self.assertEqual(tx, envoy)
        self.assertEqual(envoy[0], b"echo:hi")
        self.assertIn(("x-bin", b"\x00\x01"), envoy[2])

    def test_errorStatus(self):
        """A call the server fails: status, message and trailers intact."""
        def call(channel):
            method = channel.unary_unary("/%s/Unary" % (_SERVICE,))
            try:
                method(b"x", metadata=(("x-fail", "1"),), timeout=10)
            except grpc.RpcError as e:
                return e.code(), e.details(), _stable(e.trailing_metadata())
        envoy, tx = self.both(call)
        self.assertEqual(tx, envoy)
        self.assertEqual(envoy[0], grpc.StatusCode.FAILED_PRECONDITION)

    def test_streaming(self):
        """Server, client and bidirectional streaming calls."""
        def call(channel):
            server = list(channel.unary_stream("/%s/ServerStream" % (_SERVICE,))(
                b"4", timeout=10))
            client = channel.stream_unary("/%s/ClientStream" % (_SERVICE,))(
                iter([b"a", b"b", b"c"]), timeout=10)
            bidi = list(channel.stream_stream("/%s/Bidi" % (_SERVICE,))(
                iter([b"x", b"y"]), timeout=10))
            return server, client, bidi
        envoy, tx = self.both(call)
        self.assertEqual(tx, envoy)
        self.assertEqual(envoy[0], [b"item0", b"item1", b"item2", b"item3"])

    def test_oneUpstreamConnection(self):
        """Many calls, one multiplexed upstream connection (upstream_cx_http2_total)."""
        def call(channel):
            method = channel.unary_unary("/%s/Unary" % (_SERVICE,))
            calls = [method.future(b"%d" % (i,), timeout=10) for i in range(20)]
            return sorted(f.result() for f in calls)
        envoy, tx = self.both(call)
        self.assertEqual(tx, envoy)
        stats = [adminStats(side.adminPort) for side in self.sides]
        self.assertEqual(stats[1]["cluster.backend.upstream_cx_http2_total"],
                         stats[0]["cluster.backend.upstream_cx_http2_total"])
        self.assertEqual(stats[1]["cluster.backend.upstream_cx_http2_total"], 1)

    def test_localReplies(self):
        """
        Envoy's local replies to gRPC requests: trailers-only 200 with the
        HTTP status mapped (no route: UNIMPLEMENTED; a host that refuses:
        UNAVAILABLE with the reset reason; a direct response: UNKNOWN with
        its body as the message).
        """
        def call(channel):
            out = []
            for path in ("/nowhere.Svc/M", "/dead.Svc/M", "/direct.Svc/M"):
                try:
                    channel.unary_unary(path)(b"x", timeout=10)
                    out.append("ok")
                except grpc.RpcError as e:
                    out.append((e.code(), e.details(), _stable(e.trailing_metadata())))
            return out
        envoy, tx = self.both(call)
        self.assertEqual(tx, envoy)
        self.assertEqual([r[0] for r in envoy], [grpc.StatusCode.UNIMPLEMENTED,
                                                 grpc.StatusCode.UNAVAILABLE,
                                                 grpc.StatusCode.UNKNOWN])

    def test_retryOnUnavailable(self):
        """retry_on: unavailable retries a trailers-only UNAVAILABLE (twice here)."""
        def call(channel):
            method = channel.unary_unary("/retry.Svc/Flaky")
            return method(b"x", metadata=(("x-key", "k%d" % (id(channel),)),), timeout=10)
        envoy, tx = self.both(call)
        self.assertEqual(tx, envoy)
        self.assertEqual(envoy, b"attempt 3")

    def test_grpcTimeoutHeaderMax(self):
        """
        max_stream_duration.grpc_timeout_header_max caps the client's
        grpc-timeout (10 s here) at 0.3 s: the stream's duration timeout,
        answered DEADLINE_EXCEEDED "downstream duration timeout".
        """
        def call(channel):
            start = time.time()
            try:
                channel.unary_unary("/slow.Svc/Sleep")(b"x", timeout=10)
            except grpc.RpcError as e:
                return e.code(), e.details(), time.time() - start < 0.9
        envoy, tx = self.both(call)
        # grpcio reports Envoy's reply either with its grpc-message or with
        # its own "Deadline Exceeded" (Envoy also resets the stream, and
        # grpcio sees one or the other first): the code and the time agree.
        self.assertEqual((tx[0], tx[2]), (envoy[0], envoy[2]))
        self.assertEqual((envoy[0], envoy[2]), (grpc.StatusCode.DEADLINE_EXCEEDED, True))
        self.assertEqual(tx[1], "downstream duration timeout")

    def grpcWebBoth(self, path, body, contentType, accept=None, extra=b"x-grpc-web: 1\r\n"):
        """One HTTP/1.1 request through Envoy, then txenvoy: both raw replies."""
        head = (b"POST %s HTTP/1.1\r\nhost: a\r\ncontent-type: %s\r\n%s"
                % (path, contentType, extra))
        if accept is not None:
            head += b"accept: %s\r\n" % (accept,)
        raw = head + b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        results = []
        for side in self.sides:
            with socket.create_connection(("127.0.0.1", side.port), timeout=10) as s:
                s.sendall(raw)
                data = _recvResponse(s)
            results.append(re.sub(rb"(date|x-envoy-upstream-service-time): [^\r]*\r\n", b"",
                                  data))
        return results

    def test_grpcWebText(self):
        """
        application/grpc-web-text with accept: application/grpc-web-text:
        the base64 request decoded; each reply frame and the trailers frame
        base64-encoded on its own (Envoy's GrpcWebFilter::encodeData), the
        reply typed application/grpc-web-text+proto.
        """
        message = base64.b64encode(b"\x00" + (2).to_bytes(4, "big") + b"hi")
        envoy, tx = self.grpcWebBoth(b"/test.Echo/Unary", message,
                                     b"application/grpc-web-text",
                                     b"application/grpc-web-text")
        self.assertEqual(tx, envoy)
        self.assertIn(b"content-type: application/grpc-web-text+proto", envoy)
        body = envoy.split(b"\r\n\r\n", 1)[1]
        self.assertIn(base64.b64encode(b"\x00\x00\x00\x00\x07echo:hi"), body)

    def test_grpcWebTextStream(self):
        """A server stream over grpc-web-text: one base64 run per frame."""
        message = base64.b64encode(b"\x00" + (1).to_bytes(4, "big") + b"3")
        envoy, tx = self.grpcWebBoth(b"/test.Echo/ServerStream", message,
                                     b"application/grpc-web-text+proto",
                                     b"application/grpc-web-text+proto")
        self.assertEqual(tx, envoy)
        for i in range(3):
            self.assertIn(base64.b64encode(b"\x00\x00\x00\x00\x05item%d" % (i,)), envoy)

    def test_grpcWebTextBinaryReply(self):
        """A text request without a text accept gets a binary grpc-web+proto reply."""
        message = base64.b64encode(b"\x00" + (2).to_bytes(4, "big") + b"yo")
        envoy, tx = self.grpcWebBoth(b"/test.Echo/Unary", message, b"application/grpc-web-text")
        self.assertEqual(tx, envoy)
        self.assertIn(b"content-type: application/grpc-web+proto", envoy)
        self.assertIn(b"echo:yo", envoy)

    def test_grpcWebTextBadBase64(self):
        """
        Base64 that ends off a multiple of four, or is not base64: Envoy's
        400 "Bad gRPC-web request, invalid base64 data." (then made gRPC-Web).
        """
        for body in (b"AAAAAAJoaQ", b"AA*AAAJo"):
            envoy, tx = self.grpcWebBoth(b"/test.Echo/Unary", body,
                                         b"application/grpc-web-text")
            self.assertEqual(tx, envoy)
            self.assertTrue(envoy.startswith(b"HTTP/1.1 400 "), envoy)
            self.assertIn(b"grpc-message: Bad gRPC-web request, invalid base64 data.", envoy)

    def test_grpcWebLocalReply(self):
        """
        A gRPC-Web request answered by txenvoy itself (a refused upstream):
        not a gRPC request to the connection manager, so the HTTP reply is
        made gRPC-Web by the filter, its body moved to grpc-message.
        """
        message = b"\x00" + (2).to_bytes(4, "big") + b"hi"
        envoy, tx = self.grpcWebBoth(b"/dead.Svc/M", message, b"application/grpc-web")
        self.assertEqual(tx, envoy)
        self.assertIn(b"grpc-status: 14", envoy)
        self.assertIn(b"content-type: application/grpc-web+proto", envoy)

    def test_grpcWebOverHttp1(self):
        """
        A gRPC-Web call over HTTP/1.1 (envoy.filters.http.grpc_web): the
        upstream sees gRPC; the client gets the reply frame, then the
        trailers as a 0x80 frame, as Envoy sends them.
        """
        message = b"\x00" + (2).to_bytes(4, "big") + b"hi"
        results = self.grpcWebBoth(b"/test.Echo/Unary", message, b"application/grpc-web+proto")
        self.assertEqual(results[1], results[0])
        self.assertIn(b"content-type: application/grpc-web+proto", results[0])
        self.assertIn(b"\x80\x00\x00\x00", results[0])
        self.assertIn(b"grpc-status:0\r\n", results[0])

    def test_http1BridgeUnary(self):
        """
        envoy.filters.http.grpc_http1_bridge: gRPC over HTTP/1.1, the reply
        held for its trailers, grpc-status copied into the headers with a
        content-length; the query (ignore_query_parameters) dropped.
        """
        message = b"\x00" + (2).to_bytes(4, "big") + b"hi"
        envoy, tx = self.grpcWebBoth(b"/test.Echo/Unary?a=b", message, b"application/grpc",
                                     extra=b"te: trailers\r\n")
        self.assertEqual(tx, envoy)
        self.assertTrue(envoy.startswith(b"HTTP/1.1 200 OK\r\n"), envoy)
        self.assertIn(b"grpc-status: 0\r\n", envoy)
        self.assertIn(b"content-length: 12\r\n", envoy)
        self.assertTrue(envoy.endswith(b"\r\n\r\n\x00\x00\x00\x00\x07echo:hi"), envoy)

    def test_http1BridgeError(self):
        """A non-zero grpc-status: Envoy's 503 with grpc-status and grpc-message."""
        message = b"\x00" + (1).to_bytes(4, "big") + b"x"
        envoy, tx = self.grpcWebBoth(b"/slow.Svc/FailLate", message, b"application/grpc",
                                     extra=b"te: trailers\r\n")
        self.assertEqual(tx, envoy)
        self.assertTrue(envoy.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), envoy)
        self.assertIn(b"grpc-status: 9\r\n", envoy)
        self.assertIn(b"grpc-message: failed late\r\n", envoy)

    def test_http1BridgeProtobuf(self):
        """
        upgrade_protobuf_to_grpc: an application/x-protobuf body goes up in
        one gRPC frame; the reply comes back without its frame header.
        """
        envoy, tx = self.grpcWebBoth(b"/test.Echo/Unary", b"pb", b"application/x-protobuf",
                                     extra=b"te: trailers\r\n")
        self.assertEqual(tx, envoy)
        self.assertIn(b"grpc-status: 0\r\n", envoy)
        self.assertTrue(envoy.endswith(b"\r\n\r\necho:pb"), envoy)

    def test_retryGrpcOnHeader(self):
        """
        x-envoy-retry-grpc-on (with x-envoy-max-retries) on a route with no
        retry policy retries a trailers-only UNAVAILABLE; gRPC names in
        x-envoy-retry-on are not conditions there (Envoy's parseRetryOn).
        The request is an internal one (x-forwarded-for in
        internal_address_config), else Envoy strips both headers.
        """
        def call(channel):
            method = channel.unary_unary("/%s/Flaky" % (_SERVICE,))
            out = []
            for header in ("x-envoy-retry-grpc-on", "x-envoy-retry-on"):
                key = "h%s-%d" % (header, id(channel))
                try:
                    out.append(method(b"x", timeout=10, metadata=(
                        ("x-key", key), (header, "cancelled,unavailable"),
                        ("x-envoy-max-retries", "2"), ("x-forwarded-for", "10.0.0.1"))))
                except grpc.RpcError as e:
                    out.append((e.code(), e.details()))
            return out
        envoy, tx = self.both(call)
        self.assertEqual(tx, envoy)
        self.assertEqual(envoy, [b"attempt 3", (grpc.StatusCode.UNAVAILABLE, "try again")])

    def test_maxRequestsPerConnection(self):
        """
        max_requests_per_connection: 2 on an HTTP/2 cluster: five calls in
        turn take three connections (upstream_cx_max_requests), as Envoy.
        """
        def call(channel):
            method = channel.unary_unary("/limited.Echo/Unary")
            return [method(b"%d" % (i,), timeout=10) for i in range(5)]
        envoy, tx = self.both(call)
        self.assertEqual(tx, envoy)
        stats = [adminStats(side.adminPort) for side in self.sides]
        names = ("cluster.limited.upstream_cx_http2_total",
                 "cluster.limited.upstream_cx_max_requests")
        self.assertEqual([stats[1][n] for n in names], [stats[0][n] for n in names])
        self.assertEqual(stats[0]["cluster.limited.upstream_cx_http2_total"], 3)

    def test_grpcWebStats(self):
        """
        gRPC-Web calls counted in their cluster as Envoy's gRPC context
        counts them: grpc-web.<service>.<method>.<status>, success/failure, total.
        """
        prefix = "cluster.backend.grpc-web.test.Echo.Unary."
        names = [prefix + n for n in ("0", "9", "success", "failure", "total")]
        before = [adminStats(side.adminPort) for side in self.sides]
        message = b"\x00" + (2).to_bytes(4, "big") + b"hi"
        self.grpcWebBoth(b"/test.Echo/Unary", message, b"application/grpc-web")
        self.grpcWebBoth(b"/test.Echo/Unary", message, b"application/grpc-web",
                         extra=b"x-fail: 1\r\n")
        after = [adminStats(side.adminPort) for side in self.sides]
        deltas = [[a.get(n, 0) - b.get(n, 0) for n in names] for a, b in zip(after, before)]
        self.assertEqual(deltas[1], deltas[0])
        self.assertEqual(deltas[0], [1, 1, 1, 1, 2])
