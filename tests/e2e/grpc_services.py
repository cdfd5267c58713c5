"""
Envoy's gRPC services for the end-to-end tests, on grpcio servers built on
xds-protos' generated servicers: an authorization service
(C{envoy.service.auth.v3.Authorization}) and a rate limit service
(C{envoy.service.ratelimit.v3.RateLimitService}), each answering from a
function the test gives and recording what it received.
"""

from concurrent import futures

from tests.e2e.harness import Recorder, stopAll


class GrpcService:
    """
    A grpcio server on 127.0.0.1 serving one servicer.

    @ivar port: its port.
    @ivar recording: C{take()} returns C{[(request, metadata)]} received.
    """

    def __init__(self, addServicer, servicer):
        import grpc

        self.recording = Recorder()
        self.server = grpc.server(futures.ThreadPoolExecutor(8))
        addServicer(servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(0)


def authorizationService(answer):
    """
    An authorization service: C{answer(request, context)} returns the
    C{CheckResponse} (or aborts the call).
    """
    from envoy.service.auth.v3 import external_auth_pb2_grpc

    holder = []

    class Servicer(external_auth_pb2_grpc.AuthorizationServicer):
        def Check(self, request, context):
            holder[0].recording.add((request, dict(context.invocation_metadata())))
            return answer(request, context)

    service = GrpcService(external_auth_pb2_grpc.add_AuthorizationServicer_to_server, Servicer())
    holder.append(service)
    return service


def rateLimitService(answer):
    """
    A rate limit service: C{answer(request, context)} returns the
    C{RateLimitResponse} (or aborts the call).
    """
    from envoy.service.ratelimit.v3 import rls_pb2_grpc

    holder = []

    class Servicer(rls_pb2_grpc.RateLimitServiceServicer):
        def ShouldRateLimit(self, request, context):
            holder[0].recording.add((request, dict(context.invocation_metadata())))
            return answer(request, context)

    service = GrpcService(rls_pb2_grpc.add_RateLimitServiceServicer_to_server, Servicer())
    holder.append(service)
    return service


class Deployment:
    """
    One proxy, real Envoy or txenvoy, running C{makeConfig(ports)} on free
    ports named C{portNames} (the first is the admin's).
    """

    def __init__(self, real, portNames, makeConfig, statsFilter):
        from tests.e2e.harness import freePort, startProxy

        self.ports = {name: freePort() for name in portNames}
        self._statsFilter = statsFilter
        # Only the last listener is probed: both proxies listen on every
        # static listener before any accepts, and a probe of a listener
        # whose filter calls the service would reach the service at a time
        # of its own, among the calls a test counts.
        self.proxy = startProxy(real, makeConfig(self.ports), self.ports[portNames[-1]],
                                self.ports[portNames[0]])

    def stats(self):
        from tests.e2e.harness import adminStats

        return {name: value for name, value in adminStats(self.ports["admin"]).items()
                if self._statsFilter(name)}

    def stop(self):
        self.proxy.stop()


class ServiceSideBySide:
    """
    The shared fixture of a side-by-side test of a filter that calls a
    gRPC service: an HTTP origin, an echo server, the service, and Envoy
    and txenvoy with the same config. Subclasses (with
    L{tests.e2e.harness.SharedFixture}) set C{portNames}, C{makeService},
    C{makeConfig(ports, origin, echo, service, dead)}, C{originHandler},
    C{statsFilter} and C{summarize(records, ports)}.
    """

    maxDiff = None

    @classmethod
    def startFixture(cls):
        from tests.e2e.harness import Upstream, echoHandler, freePort, httpOrigin

        cls.originSeen = Recorder()
        cls.origin = httpOrigin(cls.originHandler(cls.originSeen))
        cls.echo = Upstream(echoHandler)
        cls.service = cls.makeService()
        cls.envoy = cls.txenvoy = None
        try:
            args = (cls.origin.server_address[1], cls.echo.port, cls.service.port, freePort())

            def makeConfig(ports):
                return cls.makeConfig(ports, *args)

            cls.envoy = Deployment(True, cls.portNames, makeConfig, cls.statsFilter)
            cls.txenvoy = Deployment(False, cls.portNames, makeConfig, cls.statsFilter)
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        stopAll(cls.envoy, cls.txenvoy, cls.service, cls.echo, cls.origin)

    def serviceSeen(self, deployment):
        """What the service received since the last call, summarized."""
        return self.summarize(self.service.recording.take(), deployment.ports)

    def assertSameTcp(self, listeners, exchange):
        """Each listener: the same C{exchange(port)} and the same calls."""
        for listener in listeners:
            expected = (exchange(self.envoy.ports[listener]), self.serviceSeen(self.envoy))
            got = (exchange(self.txenvoy.ports[listener]), self.serviceSeen(self.txenvoy))
            self.assertEqual(got, expected, listener)

    def assertSameStats(self):
        """The same stats, once txenvoy's have caught up (5 s at most)."""
        import time

        self.service.recording.take()
        deadline = time.time() + 5
        while self.txenvoy.stats() != self.envoy.stats() and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.txenvoy.stats(), self.envoy.stats())
