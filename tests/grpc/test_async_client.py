"""
Tests for L{txenvoy.grpc.async_client}: a unary OTLP call to a real gRPC
collector on 127.0.0.1, its completion handed back through the
dispatcher's C{post} (never run on grpcio's thread).
"""

import queue
import socket
import threading

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.collectors import OtlpCollector
from txenvoy.grpc.async_client import GrpcCallError, GrpcCollector

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class QueueDispatcher:
    """C{post} queues the call, as a reactor's callFromThread would."""

    clusterManager = None

    def __init__(self):
        self.posted = queue.Queue()

    def post(self, f, *args):
        self.posted.put((threading.current_thread(), f, args))

    def runOne(self, timeout=10):
        thread, f, args = self.posted.get(timeout=timeout)
        f(*args)
        return thread


class GrpcCollectorTests(SynchronousTestCase):

    def setUp(self):
        self.dispatcher = QueueDispatcher()
        self.exporter = GrpcCollector(self.dispatcher, "otel", METHOD, 5.0,
                                      metadata=[("x-k", "v")], userAgent="txenvoy-test")
        self.addCleanup(self.exporter.close)

    def test_export(self):
        """
        An OK status fires 200 only through the dispatcher's C{post}, never
        on grpcio's thread. (Which thread posts depends on timing: grpcio
        runs a done-callback at once on the caller's thread when the call
        already finished.)
        """
        collector = OtlpCollector()
        self.addCleanup(collector.stop)
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.resource_spans.add().scope_spans.add().spans.add().name = "ingress"
        d = self.exporter.post(("127.0.0.1", collector.grpcPort), request.SerializeToString())
        self.assertNoResult(d)
        self.dispatcher.runOne()
        self.assertEqual(self.successResultOf(d), 200)
        [(transport, metadata, got)] = collector.requests
        self.assertEqual((transport, metadata["x-k"], got), ("grpc", "v", request))
        self.assertTrue(metadata["user-agent"].startswith("txenvoy-test"))

    def test_deadCollector(self):
        """A refused connection fails the Deferred with the gRPC status."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        d = self.exporter.post(("127.0.0.1", port), b"")
        self.dispatcher.runOne()
        self.failureResultOf(d, GrpcCallError)
