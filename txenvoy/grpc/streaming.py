# -*- test-case-name: tests.grpc.test_streaming -*-
"""
Streaming gRPC calls with grpcio, driven from a reactor: the xDS
discovery streams (bidirectional) and the client-streaming services
(access logs, metrics).

grpcio runs its own threads. The reactor's thread only ever queues
requests (L{StreamingCall.send} never blocks) and receives events back
through C{post} (a reactor's C{callFromThread}): each response message
(deserialized on grpcio's side, so a large one does not stall the
reactor) and, once, the call's end with its gRPC status code and details.
Nothing in here touches the caller's state from a grpcio thread.
"""

import queue
import threading

#: The status code given to a call that ended without one (a transport
#: error grpcio reports as an exception without C{code()}).
UNKNOWN = 2

_END = object()


def channelTarget(address):
    """The grpcio target of C{(ip, port)}."""
    ip, port = address
    return "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)


def openChannel(address, userAgent=None, authority=None, credentials=None, tlsName=None):
    """
    A grpcio channel to C{address} (C{(ip, port)}), plaintext unless
    C{credentials} (C{grpc.ssl_channel_credentials}) are given; then the
    server's certificate is checked against C{tlsName} (the SNI) when set.
    """
    import grpc

    options = [("grpc.enable_retries", 0)]
    if userAgent:
        options.append(("grpc.primary_user_agent", userAgent))
    if authority:
        options.append(("grpc.default_authority", authority))
    target = channelTarget(address)
    if credentials is not None and tlsName:
        options.append(("grpc.ssl_target_name_override", tlsName))
    if credentials is not None:
        return grpc.secure_channel(target, credentials, options=options)
    return grpc.insecure_channel(target, options=options)


class _Requests:
    """
    The request side: a queue the reactor fills and grpcio's request
    consumer thread drains, ended by L{close}.
    """

    def __init__(self):
        self._queue = queue.SimpleQueue()
        self.closed = False

    def put(self, message):
        if not self.closed:
            self._queue.put(message)

    def queued(self):
        return self._queue.qsize()

    def close(self):
        if not self.closed:
            self.closed = True
            self._queue.put(_END)

    def __iter__(self):
        while True:
            message = self._queue.get()
            if message is _END:
                return
            yield message


def _statusOf(error):
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    code = code() if callable(code) else None
    details = details() if callable(details) else str(error)
    return (UNKNOWN if code is None else code.value[0]), details or ""


class _QueuedCall:
    """What both kinds of call share: the queued request side and C{cancel}."""

    _requests = None
    _pending = None
    active = False

    def send(self, message):
        """Queue a request (never blocks)."""
        if self.active:
            self._requests.put(message)

    def queued(self):
        """How many requests wait for grpcio to take them (a slow peer's backlog)."""
        return self._requests.queued() if self._requests is not None else 0

    def finish(self):
        """End the request side; the response(s) may still arrive."""
        if self._requests is not None:
            self._requests.close()

    def cancel(self):
        """End the call now; no callback runs after this."""
        pending, self._pending = self._pending, None
        self.active = False
        if self._requests is not None:
            self._requests.close()
        if pending is not None:
            pending.cancel()


class StreamingCall(_QueuedCall):
    """
    One bidirectional call: L{start} it with the reactor-side callbacks,
    L{send} requests, L{finish} the request side, or L{cancel} it.

    @ivar active: whether the call is started and has not ended.
    """

    def __init__(self, post, channel, method, requestSerializer=None,
                 responseDeserializer=None, metadata=(), timeout=None):
        """
        @param post: C{f(callable, *args)} running C{callable} on the
            reactor's thread (C{reactor.callFromThread}).
        @param method: the full method path, e.g.
            C{/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources}.
        @param requestSerializer: message to bytes (C{SerializeToString}
            of the request class when C{None}: a message is sent as is).
        @param responseDeserializer: bytes to message (raw bytes when
            C{None}).
        """
        self._post = post
        self._multi = channel.stream_stream(
            method, request_serializer=requestSerializer or _serialize,
            response_deserializer=responseDeserializer)
        self._metadata = tuple(metadata) or None
        self._timeout = timeout

    def start(self, onMessage, onClose):
        """
        Open the stream.

        @param onMessage: C{f(message)}, on the reactor, per response.
        @param onClose: C{f(code, details)}, on the reactor, once, when
            the call ends (C{0} for OK), unless it was L{cancel}led.
        """
        self._requests = requests = _Requests()
        self._pending = call = self._multi(iter(requests), metadata=self._metadata,
                                        timeout=self._timeout)
        self.active = True
        post = self._post

        def closed(code, details):
            if self._pending is call and self.active:
                self.active = False
                requests.close()
                onClose(code, details)

        def delivered(message):
            if self._pending is call and self.active:
                onMessage(message)

        def read():
            # grpcio's side: block on the responses, hand each one over.
            try:
                for message in call:
                    post(delivered, message)
            except Exception as e:
                post(closed, *_statusOf(e))
            else:
                post(closed, 0, "")

        threading.Thread(target=read, name="grpc-stream", daemon=True).start()



class ClientStreamingCall(_QueuedCall):
    """
    One client-streaming call (C{stream Request returns (Response)}):
    requests queued from the reactor, the one response or the failure
    handed back once through C{post}.
    """

    def __init__(self, post, channel, method, requestSerializer=None,
                 responseDeserializer=None, metadata=(), timeout=None):
        self._post = post
        self._unary = channel.stream_unary(
            method, request_serializer=requestSerializer or _serialize,
            response_deserializer=responseDeserializer)
        self._metadata = tuple(metadata) or None
        self._timeout = timeout

    def start(self, onDone):
        """
        Open the stream.

        @param onDone: C{f(code, details, response)} on the reactor, once
            (C{response} is C{None} unless C{code} is 0), unless the call
            was L{cancel}led.
        """
        self._requests = requests = _Requests()
        self._pending = future = self._unary.future(iter(requests), metadata=self._metadata,
                                                   timeout=self._timeout)
        self.active = True
        post = self._post

        def fire(code, details, response):
            if self._pending is future and self.active:
                self.active = False
                requests.close()
                onDone(code, details, response)

        def done(f):
            try:
                response = f.result()
            except Exception as e:
                post(fire, *(_statusOf(e) + (None,)))
            else:
                post(fire, 0, "", response)

        future.add_done_callback(done)



def _serialize(message):
    if isinstance(message, bytes):
        return message
    return message.SerializeToString()
