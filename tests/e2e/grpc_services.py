"""
Envoy's gRPC services for the end-to-end tests, on grpcio servers built on
xds-protos' generated servicers: an authorization service
(C{envoy.service.auth.v3.Authorization}) and a rate limit service
(C{envoy.service.ratelimit.v3.RateLimitService}), each answering from a
function the test gives and recording what it received.
"""

from concurrent import futures

from tests.e2e.test_ext_authz import _Recorder


class GrpcService:
    """
    A grpcio server on 127.0.0.1 serving one servicer.

    @ivar port: its port.
    @ivar recording: C{take()} returns C{[(request, metadata)]} received.
    """

    def __init__(self, addServicer, servicer):
        import grpc

        self.recording = _Recorder()
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
