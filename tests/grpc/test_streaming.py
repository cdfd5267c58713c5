"""
Tests for L{txenvoy.grpc.streaming}: bidirectional and client-streaming
calls to a real grpcio server on 127.0.0.1, requests queued from the test's
thread and every response and end handed back through C{post} only.
"""

import queue
import socket
import threading
from concurrent import futures

import grpc
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.grpc.streaming import ClientStreamingCall, StreamingCall, openChannel

ECHO = "/test.Echo/Chat"
SUM = "/test.Echo/Count"


class QueueDispatcher:
    """C{post} queues the call, as a reactor's callFromThread would."""

    def __init__(self):
        self.posted = queue.Queue()
        self.threads = set()

    def post(self, f, *args):
        self.posted.put((f, args))

    def runOne(self, timeout=10):
        f, args = self.posted.get(timeout=timeout)
        self.threads.add(threading.current_thread())
        f(*args)


def _chat(requests, context):
    for request in requests:
        if request == b"fail":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "told to fail")
        yield request.upper()


def _count(requests, context):
    return str(sum(1 for _ in requests)).encode()


class EchoServer:
    """A grpcio server with one bidirectional and one client-streaming method."""

    def __init__(self):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler("test.Echo", {
            "Chat": grpc.stream_stream_rpc_method_handler(_chat),
            "Count": grpc.stream_unary_rpc_method_handler(_count)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(None)


class StreamingCallTests(SynchronousTestCase):

    def setUp(self):
        self.server = EchoServer()
        self.addCleanup(self.server.stop)
        self.dispatcher = QueueDispatcher()
        self.channel = openChannel(("127.0.0.1", self.server.port), userAgent="txenvoy-test")
        self.addCleanup(self.channel.close)
        self.messages, self.closes = [], []

    def start(self):
        call = StreamingCall(self.dispatcher.post, self.channel, ECHO)
        call.start(self.messages.append, lambda *status: self.closes.append(status))
        self.addCleanup(call.cancel)
        return call

    def test_exchange(self):
        """
        Requests sent from this thread reach the server in order; each
        response and the OK end arrive only through C{post}.
        """
        call = self.start()
        call.send(b"one")
        call.send(b"two")
        self.dispatcher.runOne()
        self.dispatcher.runOne()
        self.assertEqual(self.messages, [b"ONE", b"TWO"])
        self.assertEqual(self.dispatcher.threads, {threading.current_thread()})
        call.finish()
        self.dispatcher.runOne()
        self.assertEqual(self.closes, [(0, "")])
        self.assertFalse(call.active)

    def test_serverStatus(self):
        """A status the server ends the call with is handed over with its details."""
        call = self.start()
        call.send(b"fail")
        self.dispatcher.runOne()
        self.assertEqual(self.closes, [(grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                        "told to fail")])

    def test_unreachable(self):
        """A refused connection ends the call with UNAVAILABLE (14)."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        channel = openChannel(("127.0.0.1", port))
        self.addCleanup(channel.close)
        call = StreamingCall(self.dispatcher.post, channel, ECHO)
        call.start(self.messages.append, lambda *status: self.closes.append(status))
        call.send(b"x")
        self.dispatcher.runOne()
        self.assertEqual([code for code, _ in self.closes], [14])

    def test_cancel(self):
        """After C{cancel} nothing more is delivered."""
        call = self.start()
        call.send(b"one")
        call.cancel()
        while not self.dispatcher.posted.empty() or call.active:
            self.dispatcher.runOne()
        try:
            self.dispatcher.runOne(timeout=0.5)
        except queue.Empty:
            pass
        self.assertEqual((self.messages, self.closes), ([], []))
        call.send(b"ignored")


class ClientStreamingCallTests(SynchronousTestCase):

    def test_count(self):
        """Queued requests, then the one response once the request side ends."""
        server = EchoServer()
        self.addCleanup(server.stop)
        dispatcher = QueueDispatcher()
        channel = openChannel(("127.0.0.1", server.port))
        self.addCleanup(channel.close)
        done = []
        call = ClientStreamingCall(dispatcher.post, channel, SUM)
        call.start(lambda *result: done.append(result))
        for _ in range(3):
            call.send(b"m")
        call.finish()
        dispatcher.runOne()
        self.assertEqual(done, [(0, "", b"3")])
