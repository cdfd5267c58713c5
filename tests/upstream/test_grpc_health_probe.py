"""
Tests for L{txenvoy.upstream.grpc_health_probe}: the probe's HTTP/2 talks
to an in-memory C{h2} server connection, which answers as a
C{grpc.health.v1} server would (or would not).
"""

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import RequestReceived, StreamEnded
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.upstream.grpc_health_probe import (BROKEN, FAILURE, PATH, SUCCESS,
                                                GrpcHealthProbe, decodeStatus, encodeRequest)


def frame(message):
    return b"\x00" + len(message).to_bytes(4, "big") + message


class Server:
    """An h2 server connection that records the requests it gets."""

    def __init__(self):
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.conn.initiate_connection()
        self.requests = []
        self.bodies = {}
        self.out = self.conn.data_to_send()

    def receive(self, data):
        for event in self.conn.receive_data(data):
            if isinstance(event, RequestReceived):
                self.requests.append((event.stream_id, dict(event.headers)))
            elif isinstance(event, StreamEnded):
                pass
            elif hasattr(event, "data"):
                self.bodies[event.stream_id] = self.bodies.get(event.stream_id, b"") + event.data
        self.out += self.conn.data_to_send()

    def answer(self, stream, status=b"200", body=frame(b"\x08\x01"), grpcStatus=b"0"):
        c = self.conn
        c.send_headers(stream, [(b":status", status), (b"content-type", b"application/grpc")])
        if body:
            c.send_data(stream, body)
        c.send_headers(stream, [(b"grpc-status", grpcStatus)], end_stream=True)
        self.out += c.data_to_send()

    def take(self):
        out, self.out = self.out, b""
        return out


class GrpcHealthProbeTests(SynchronousTestCase):

    def setUp(self):
        self.probe = GrpcHealthProbe(b"backend", "svc", [(b"x-k", b"v")])
        self.server = Server()

    def call(self, **answer):
        """One check: @return: its outcome."""
        self.server.receive(self.probe.check())
        stream = self.server.requests[-1][0]
        self.server.answer(stream, **answer)
        out, outcome = self.probe.feed(self.server.take())
        self.server.receive(out)
        return outcome

    def test_request(self):
        """
        A POST of C{grpc.health.v1.Health/Check} with the authority, gRPC's
        headers, C{initial_metadata} and the service in the message.
        """
        self.call()
        [(stream, headers)] = self.server.requests
        self.assertEqual(
            (headers[b":method"], headers[b":path"], headers[b":authority"],
             headers[b"content-type"], headers[b"te"], headers[b"x-k"]),
            (b"POST", PATH, b"backend", b"application/grpc", b"trailers", b"v"))
        self.assertEqual(self.server.bodies[stream], frame(b"\x0a\x03svc"))

    def test_serving(self):
        self.assertEqual(self.call(), SUCCESS)

    def test_reuseConnection(self):
        """Checks follow one another on new streams of one connection."""
        self.assertEqual([self.call(), self.call()], [SUCCESS, SUCCESS])
        self.assertEqual([s for s, _ in self.server.requests], [1, 3])

    def test_notServing(self):
        self.assertEqual(self.call(body=frame(b"\x08\x02")), FAILURE)

    def test_unknown(self):
        """An empty response message is UNKNOWN: a failure."""
        self.assertEqual(self.call(body=frame(b"")), FAILURE)

    def test_grpcError(self):
        self.assertEqual(self.call(body=b"", grpcStatus=b"12"), FAILURE)

    def test_httpError(self):
        self.assertEqual(self.call(status=b"503"), FAILURE)

    def test_garbage(self):
        """Bytes that are not HTTP/2 break the connection."""
        self.probe.check()
        self.assertEqual(self.probe.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n")[1], BROKEN)
        self.assertTrue(self.probe.broken)

    def test_goaway(self):
        """A GOAWAY during a check: broken."""
        self.server.receive(self.probe.check())
        self.server.conn.close_connection()
        self.assertEqual(self.probe.feed(self.server.conn.data_to_send())[1], BROKEN)

    def test_messages(self):
        self.assertEqual(encodeRequest(""), frame(b""))
        self.assertEqual([decodeStatus(frame(b"\x08\x01")), decodeStatus(frame(b"")),
                          decodeStatus(frame(b"\x12\x01x\x08\x02")), decodeStatus(b"\x01"),
                          decodeStatus(frame(b"\x08"))],
                         [1, 0, 2, None, None])
