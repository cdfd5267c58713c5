# -*- test-case-name: tests.e2e.test_ratelimit -*-
"""
The gRPC rate limit service (C{envoy.service.ratelimit.v3.RateLimitService/
ShouldRateLimit}), shared by the HTTP and the network C{ratelimit}
filters: the C{rate_limit_service} config, the C{RateLimitRequest} and
the answer as Envoy 1.40 reads it (C{UNKNOWN} counts as C{OK}).
"""

from envoy.config.ratelimit.v3 import rls_pb2 as config_pb2  # noqa: F401
from envoy.service.ratelimit.v3 import rls_pb2

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.grpc.async_client import GrpcServiceClient, compileEnvoyGrpc

__all__ = ["OK", "OVER_LIMIT", "RateLimitClient", "compileRateLimitService",
           "xRateLimitHeaders"]

METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT

# RateLimitResponse.RateLimit.Unit -> the window in seconds (Envoy's
# XRateLimitHeaderUtils::convertRateLimitUnit).
_WINDOWS = {1: 1, 2: 60, 3: 3600, 4: 86400, 7: 604800, 5: 2592000, 6: 31536000}

#: Envoy's default C{timeout} of the ratelimit filters.
DEFAULT_TIMEOUT = 0.02


class RateLimitClient(GrpcServiceClient):
    """Calls C{ShouldRateLimit} with a filter's C{domain}."""

    def __init__(self, target, domain, timeout):
        GrpcServiceClient.__init__(self, target, METHOD, rls_pb2.RateLimitResponse, timeout)
        self.domain = domain

    def limit(self, dispatcher, descriptors):
        """
        @param descriptors: C{[(entries, hitsAddend)]}, C{entries} a list
            of C{(key, value)}, C{hitsAddend} an int or C{None}.
        @return: a Deferred firing with the C{RateLimitResponse}.
        """
        request = rls_pb2.RateLimitRequest(domain=self.domain)
        for entries, addend in descriptors:
            descriptor = request.descriptors.add()
            for key, value in entries:
                entry = descriptor.entries.add()
                entry.key = key
                entry.value = value
            if addend is not None:
                descriptor.hits_addend.value = addend
        return self.call(dispatcher, request)


def compileRateLimitService(message, path, bootstrap, domain, timeout):
    """
    Compile a C{RateLimitServiceConfig} (C{envoy_grpc} only).

    @return: a L{RateLimitClient}.
    """
    if message.ByteSize() == 0:
        raise ConfigError("%s: RateLimitValidationError.RateLimitService: value is required"
                          % (path,))
    checkFields(message, ("grpc_service", "transport_api_version"), path)
    target = compileEnvoyGrpc(message.grpc_service, path + ".grpc_service", bootstrap)
    return RateLimitClient(target, domain, timeout)


def xRateLimitHeaders(statuses):
    """
    Envoy's C{DRAFT_VERSION_03} headers for the descriptor statuses of an
    answer: C{[(name, value)]} (bytes), empty when no status has a
    C{current_limit}.
    """
    smallest = None
    policy = ""
    for status in statuses:
        if not status.HasField("current_limit"):
            continue
        if smallest is None or status.limit_remaining < smallest.limit_remaining:
            smallest = status
        limit = status.current_limit
        window = _WINDOWS.get(limit.unit, 0)
        if window:
            policy += ", %d;w=%d" % (limit.requests_per_unit, window)
            if limit.name:
                policy += ';name="%s"' % (limit.name,)
    if smallest is None:
        return []
    return [
        (b"x-ratelimit-limit",
         ("%d%s" % (smallest.current_limit.requests_per_unit, policy)).encode("utf-8")),
        (b"x-ratelimit-remaining", b"%d" % (smallest.limit_remaining,)),
        (b"x-ratelimit-reset", b"%d" % (smallest.duration_until_reset.seconds,)),
    ]
