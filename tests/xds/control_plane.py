"""
A small ADS control plane for the tests, on xds-protos' generated
servicer and a grpcio server on 127.0.0.1: state of the world
(C{StreamAggregatedResources}) and delta (C{DeltaAggregatedResources}).

It records every request each stream sends (the ACK/NACK sequence a test
compares between txenvoy and real Envoy), answers a type's first request on
a stream with the current snapshot of that type, and pushes every new
snapshot to each stream that asked for the type. Nonces count per server.
It can also send raw responses (garbage) and close every stream.
"""

import itertools
import queue
import threading
import time
from concurrent import futures

import grpc
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.listener.v3 import lds_pb2_grpc
from envoy.service.route.v3 import rds_pb2_grpc
from google.protobuf import any_pb2

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def packed(message):
    a = any_pb2.Any()
    a.Pack(message)
    return a


class _Stream:
    def __init__(self, number, delta):
        self.number = number
        self.delta = delta
        self.out = queue.Queue()
        self.types = set()
        self.requests = []
        self.sent = {}     # type URL: names sent (delta)
        self.open = True


class ControlPlane(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """
    @ivar streams: every stream opened, in order.
    @ivar sentAt: C{{nonce: time.monotonic()}} of each response queued.
    @ivar answeredAt: C{{nonce: time.monotonic()}} of the first request
        answering it (ACK or NACK).
    @ivar pushed: C{{nonce: (type URL, version)}} of each response queued
        (state of the world), on whichever stream.
    """

    def __init__(self, port=0, tls=None):
        """
        @param tls: C{(certificatePem, keyPem)} to serve over TLS.
        """
        self.snapshots = {}   # type URL: (version, {name: message})
        self.streams = []
        self.sentAt = {}
        self.answeredAt = {}
        self.pushed = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._nonces = itertools.count(1)
        self._systemVersion = itertools.count(1)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self.server)
        # The per-type services, for api_config_source streams.
        cds_pb2_grpc.add_ClusterDiscoveryServiceServicer_to_server(self, self.server)
        lds_pb2_grpc.add_ListenerDiscoveryServiceServicer_to_server(self, self.server)
        rds_pb2_grpc.add_RouteDiscoveryServiceServicer_to_server(self, self.server)
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:%d" % (port,))
        else:
            credentials = grpc.ssl_server_credentials([(tls[1], tls[0])])
            self.port = self.server.add_secure_port("127.0.0.1:%d" % (port,), credentials)
        self.server.start()

    def stop(self):
        self.closeStreams()
        self.server.stop(None)

    # What a test does.

    def setResources(self, typeUrl, version, messages):
        """Replace the snapshot of a type and push it to its streams."""
        with self._lock:
            old = self.snapshots.get(typeUrl, (None, {}))[1]
            # A ClusterLoadAssignment is named by its cluster_name.
            self.snapshots[typeUrl] = (version, {getattr(m, "name", None) or m.cluster_name: m
                                                 for m in messages})
            self._changed.notify_all()
            for stream in self.streams:
                if stream.open and typeUrl in stream.types:
                    self._push(stream, typeUrl, old)

    def sendRaw(self, response):
        """Send a response as is to every open stream of its kind (SotW or delta)."""
        delta = isinstance(response, discovery_pb2.DeltaDiscoveryResponse)
        with self._lock:
            for stream in self.streams:
                if stream.open and stream.delta == delta:
                    stream.out.put(response)

    def closeStreams(self):
        with self._lock:
            for stream in self.streams:
                if stream.open:
                    stream.open = False
                    stream.out.put(None)

    def requestsOf(self, typeUrl, stream=None):
        """Every request of a type, over all streams (or one)."""
        with self._lock:
            streams = self.streams if stream is None else [self.streams[stream]]
            return [r for s in streams for r in s.requests if r.type_url == typeUrl]

    def acked(self, typeUrl, version):
        """
        Whether a stream ACKed the snapshot C{version} of a type (a request
        naming the nonce of a response that carried it, with that version);
        fails on a NACK of it. Any other request (a stream reconnecting, a
        subscription changing, a request naming an older nonce) is no answer.
        """
        with self._lock:
            nonces = {n for n, pushed in self.pushed.items() if pushed == (typeUrl, version)}
            found = False
            for request in self.requestsOf(typeUrl):
                if request.response_nonce in nonces:
                    if request.error_detail.code:
                        raise AssertionError("%s version %s rejected: %s" % (
                            typeUrl, version, request.error_detail.message))
                    found = found or request.version_info == version
            return found

    def waitFor(self, predicate, timeout=20.0):
        """Wait until C{predicate(self)} holds; return its value."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate(self)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("control plane: condition not met; requests: %r"
                                         % ([s.requests for s in self.streams],))
                self._changed.wait(left)

    # The servicer.

    def StreamAggregatedResources(self, requests, context):
        return self._serve(requests, context, delta=False)

    def DeltaAggregatedResources(self, requests, context):
        return self._serve(requests, context, delta=True)

    StreamClusters = StreamListeners = StreamRoutes = StreamAggregatedResources
    DeltaClusters = DeltaListeners = DeltaRoutes = DeltaAggregatedResources

    def FetchClusters(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "REST is served elsewhere")

    FetchListeners = FetchRoutes = FetchClusters

    def _serve(self, requests, context, delta):
        with self._lock:
            stream = _Stream(len(self.streams), delta)
            self.streams.append(stream)
            self._changed.notify_all()

        def read():
            try:
                for request in requests:
                    with self._lock:
                        self.answeredAt.setdefault(request.response_nonce, time.monotonic())
                        stream.requests.append(request)
                        self._onRequest(stream, request)
                        self._changed.notify_all()
            except Exception:
                pass
            with self._lock:
                stream.open = False
                stream.out.put(None)
                self._changed.notify_all()

        threading.Thread(target=read, daemon=True).start()
        while True:
            response = stream.out.get()
            if response is None:
                return
            yield response

    def _onRequest(self, stream, request):
        typeUrl = request.type_url
        if stream.delta:
            first = typeUrl not in stream.types
            stream.types.add(typeUrl)
            if first:
                stream.sent[typeUrl] = dict(request.initial_resource_versions)
                self._push(stream, typeUrl, None)
            return
        if typeUrl in stream.types:
            return
        stream.types.add(typeUrl)
        snapshot = self.snapshots.get(typeUrl)
        if snapshot is not None and snapshot[0] != request.version_info:
            self._push(stream, typeUrl, None)

    def _push(self, stream, typeUrl, old):
        snapshot = self.snapshots.get(typeUrl)
        if snapshot is None:
            return
        version, messages = snapshot
        nonce = str(next(self._nonces))
        if not stream.delta:
            response = discovery_pb2.DiscoveryResponse(
                version_info=version, type_url=typeUrl, nonce=nonce,
                resources=[packed(m) for m in messages.values()])
            self.sentAt[nonce] = time.monotonic()
            self.pushed[nonce] = (typeUrl, version)
            stream.out.put(response)
            return
        sent = stream.sent.setdefault(typeUrl, {})
        response = discovery_pb2.DeltaDiscoveryResponse(
            type_url=typeUrl, nonce=nonce,
            system_version_info=str(next(self._systemVersion)))
        for name, message in messages.items():
            if sent.get(name) != version + ":" + name:
                response.resources.add(name=name, version=version + ":" + name,
                                       resource=packed(message))
                sent[name] = version + ":" + name
        for name in list(sent):
            if name not in messages:
                response.removed_resources.append(name)
                del sent[name]
        self.sentAt[nonce] = time.monotonic()
        stream.out.put(response)
