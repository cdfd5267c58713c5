"""
Telemetry receivers for the end-to-end tests: a Zipkin-API HTTP receiver
(C{POST /api/v2/spans}, Zipkin v2 JSON), a Datadog agent's trace API
(C{/v0.4/traces}, msgpack) and an origin that records the request heads it
receives. Threaded servers on 127.0.0.1, stopped by the
test.
"""

import http.server
import json
import threading
import time

from tests.e2e.harness import readBody


def waitSpans(receiver, count, timeout=15.0):
    """A receiver's spans once at least C{count} arrived (else what there is)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        spans = receiver.spans()
        if len(spans) >= count:
            return spans
        time.sleep(0.05)
    return receiver.spans()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Recorder:
    """A threaded HTTP server on 127.0.0.1 whose handler calls C{self.record}."""

    def __init__(self):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                owner.onRequest(self, readBody(self))

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def protoSpansAsJson(body):
    """
    A C{zipkin.proto3.ListOfSpans} body as the Zipkin v2 JSON spans it
    stands for (ids in hex, kind by name, the endpoint's address dotted),
    so that both formats compare alike; C{None} when it does not parse.
    """
    import socket

    from google.protobuf.message import DecodeError

    from txenvoy.tracing import zipkin_proto

    message = zipkin_proto.ListOfSpans()
    try:
        message.ParseFromString(body)
    except DecodeError:
        return None
    kinds = {v: k for k, v in zipkin_proto.KINDS.items()}
    out = []
    for span in message.spans:
        endpoint = {"serviceName": span.local_endpoint.service_name}
        if span.local_endpoint.ipv4:
            endpoint["ipv4"] = socket.inet_ntoa(span.local_endpoint.ipv4)
        if span.local_endpoint.port:
            endpoint["port"] = span.local_endpoint.port
        item = {"traceId": span.trace_id.hex(), "id": span.id.hex(), "name": span.name,
                "kind": kinds.get(span.kind, span.kind), "timestamp": span.timestamp,
                "duration": span.duration, "localEndpoint": endpoint, "tags": dict(span.tags),
                "annotations": [{"timestamp": a.timestamp, "value": a.value}
                                for a in span.annotations]}
        if span.parent_id:
            item["parentId"] = span.parent_id.hex()
        if span.shared:
            item["shared"] = True
        out.append(item)
    return out


class ZipkinReceiver(_Recorder):
    """
    Records every report: C{reports} is a list of C{(path, headers, spans)};
    answers 202 as a Zipkin collector does.
    """

    def __init__(self, status=202):
        self.reports = []
        self.status = status
        _Recorder.__init__(self)

    def onRequest(self, handler, body):
        if handler.headers.get("content-type") == "application/x-protobuf":
            spans = protoSpansAsJson(body)
        else:
            try:
                spans = json.loads(body)
            except ValueError:
                spans = None
        with self._lock:
            self.reports.append((handler.path, dict(handler.headers.items()), spans))
        handler.send_response(self.status)
        handler.send_header("content-length", "0")
        handler.end_headers()

    def spans(self):
        """Every span received so far, in arrival order."""
        with self._lock:
            return [s for _, _, spans in self.reports for s in (spans or ())]

    waitSpans = waitSpans


class DatadogAgent(_Recorder):
    """
    A Datadog agent's trace intake: C{reports} keeps C{(path, headers,
    traces)} for each C{POST /v0.4/traces} (a msgpack list of traces, each
    a list of span maps); answers 200 with C{rate_by_service} as the agent
    does.
    """

    def __init__(self, rates=None):
        self.reports = []
        self.rates = rates if rates is not None else {"service:,env:": 1.0}
        _Recorder.__init__(self)

    def onRequest(self, handler, body):
        import msgpack

        try:
            traces = msgpack.unpackb(body)
        except ValueError:
            traces = None
        with self._lock:
            self.reports.append((handler.path, dict(handler.headers.items()), traces))
        answer = json.dumps({"rate_by_service": self.rates}).encode()
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)

    def spans(self):
        """Every span received so far, in arrival order."""
        with self._lock:
            return [s for _, _, traces in self.reports for t in (traces or ()) for s in t]

    waitSpans = waitSpans


class RecordingOrigin(_Recorder):
    """Answers C{200 ok}; C{heads} keeps each request's header list."""

    def __init__(self):
        self.heads = []
        _Recorder.__init__(self)

    def onRequest(self, handler, body):
        with self._lock:
            self.heads.append(handler.headers.items())
        handler.send_response(200)
        handler.send_header("content-length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")


class OtlpCollector:
    """
    An OpenTelemetry collector built on C{opentelemetry-proto}: the OTLP
    gRPC C{TraceService}, C{LogsService} and C{MetricsService} (grpcio
    server, C{grpcPort})
    and the OTLP/HTTP endpoint C{POST /v1/traces} (C{httpPort}). C{requests} keeps each
    C{ExportTraceServiceRequest} with the transport it came by and its
    metadata or headers.
    """

    def __init__(self, httpStatus=200):
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import (
            logs_service_pb2,
            logs_service_pb2_grpc,
        )
        from opentelemetry.proto.collector.metrics.v1 import (
            metrics_service_pb2,
            metrics_service_pb2_grpc,
        )
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        self.requests = []
        self._lock = threading.Lock()
        owner = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                with owner._lock:
                    owner.requests.append(("grpc", dict(context.invocation_metadata()),
                                           request))
                return trace_service_pb2.ExportTraceServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):
                with owner._lock:
                    owner.logs.append(("grpc", dict(context.invocation_metadata()), request))
                return logs_service_pb2.ExportLogsServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                with owner._lock:
                    owner.metrics.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.logs = []
        self.metrics = []
        self.grpcServer = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.grpcServer)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.grpcServer)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self.grpcServer)
        self.grpcPort = self.grpcServer.add_insecure_port("127.0.0.1:0")
        self.grpcServer.start()

        class Http(_Recorder):
            def onRequest(self, handler, body):
                message = trace_service_pb2.ExportTraceServiceRequest()
                message.ParseFromString(body)
                with owner._lock:
                    owner.requests.append(("http", dict(handler.headers.items()), message))
                handler.send_response(httpStatus)
                handler.send_header("content-length", "0")
                handler.end_headers()

        self.http = Http()
        self.httpPort = self.http.port

    def logRecords(self):
        """C{(resource attributes dict, log record)} for every OTLP log record so far."""
        with self._lock:
            requests = list(self.logs)
        return [({a.key: _anyValue(a.value) for a in rl.resource.attributes}, record)
                for _, _, request in requests for rl in request.resource_logs
                for sl in rl.scope_logs for record in sl.log_records]

    def spans(self):
        """C{(resource attributes dict, scope name, span)} for every span so far."""
        out = []
        with self._lock:
            requests = list(self.requests)
        for _, _, request in requests:
            for rs in request.resource_spans:
                resource = {a.key: _anyValue(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.append((resource, ss.scope.name, span))
        return out

    waitSpans = waitSpans

    def stop(self):
        self.grpcServer.stop(0)
        self.http.stop()


def _anyValue(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class FluentdReceiver:
    """
    A Fluentd forward input on 127.0.0.1 (TCP, msgpack): C{messages} keeps
    every decoded message, C{connections} counts the connections taken.
    """

    def __init__(self):
        import socket

        self.messages = []
        self.connections = 0
        self._lock = threading.Lock()
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(8)
        self.port = self._socket.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stopped:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection):
        import msgpack

        unpacker = msgpack.Unpacker(raw=False)
        with connection:
            while True:
                try:
                    data = connection.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                unpacker.feed(data)
                for message in unpacker:
                    with self._lock:
                        self.messages.append(message)

    def entries(self):
        """C{(tag, time, record)} for every entry so far."""
        with self._lock:
            return [(m[0], t, r) for m in self.messages for t, r in m[1]]

    def waitEntries(self, count, timeout=15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            entries = self.entries()
            if len(entries) >= count:
                return entries
            time.sleep(0.05)
        return self.entries()

    def stop(self):
        self._stopped = True
        self._socket.close()


class AccessLogServiceReceiver:
    """
    Envoy's gRPC access log service (C{envoy.service.accesslog.v3},
    C{StreamAccessLogs}) on a grpcio server: C{streams} keeps, per stream,
    its C{StreamAccessLogsMessage}s and metadata.
    """

    def __init__(self):
        from concurrent import futures

        import grpc
        from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

        self.streams = []
        self._lock = threading.Lock()
        owner = self

        class Service(als_pb2_grpc.AccessLogServiceServicer):
            def StreamAccessLogs(self, request_iterator, context):
                messages = []
                with owner._lock:
                    owner.streams.append((dict(context.invocation_metadata()), messages))
                for message in request_iterator:
                    with owner._lock:
                        messages.append(message)
                return als_pb2.StreamAccessLogsResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def messages(self):
        with self._lock:
            return [m for _, messages in self.streams for m in messages]

    def httpEntries(self):
        return [e for m in self.messages() for e in m.http_logs.log_entry]

    def tcpEntries(self):
        return [e for m in self.messages() for e in m.tcp_logs.log_entry]

    def waitFor(self, entries, count, timeout=15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = entries()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return entries()

    def stop(self):
        self.server.stop(0)


class MetricsServiceReceiver:
    """
    Envoy's gRPC metrics service (C{envoy.service.metrics.v3},
    C{StreamMetrics}) on a grpcio server: C{messages} keeps every
    C{StreamMetricsMessage} in arrival order.
    """

    def __init__(self):
        from concurrent import futures

        import grpc

        from txenvoy.stats import metrics_service_protos as protos

        self.messages = []
        self._lock = threading.Lock()
        owner = self

        def streamMetrics(requests, context):
            for message in requests:
                with owner._lock:
                    owner.messages.append(message)
            return protos.StreamMetricsResponse()

        handler = grpc.method_handlers_generic_handler(
            "envoy.service.metrics.v3.MetricsService",
            {"StreamMetrics": grpc.stream_unary_rpc_method_handler(
                streamMetrics, request_deserializer=protos.StreamMetricsMessage.FromString,
                response_serializer=lambda response: response.SerializeToString())})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def waitMessages(self, count, timeout=15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        with self._lock:
            return list(self.messages)

    def stop(self):
        self.server.stop(0)
