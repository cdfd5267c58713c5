"""
Tests for L{txenvoy.extensions.filters.common.ext_authz_grpc}: the
C{CheckResponse} read as Envoy 1.40 applies it (the side-by-side run is
C{tests/e2e/test_ext_authz_grpc.py}).
"""

from twisted.trial.unittest import SynchronousTestCase

from envoy.service.auth.v3 import external_auth_pb2

from tests.e2e.test_ext_authz_grpc import _option
from txenvoy.extensions.filters.common.ext_authz_grpc import checkRequest, readCheckResponse
from txenvoy.http.headers import HeaderMap
from txenvoy.network.stream_info import StreamInfo
from twisted.internet.task import Clock


def _map(*pairs):
    headers = HeaderMap()
    for name, value in pairs:
        headers.add(name, value)
    return headers


class ReadCheckResponseTests(SynchronousTestCase):

    def test_okRequestMutations(self):
        """
        Envoy's OK request mutations: C{append: true} joins an existing
        header with C{,} (an absent one is not added); any other header is
        removed and added at the end, whatever its C{append_action};
        C{headers_to_remove} removes (never a pseudo-header or host).
        """
        response = external_auth_pb2.CheckResponse()
        ok = response.ok_response
        _option(ok.headers, "X-App", "n", True)
        _option(ok.headers, "x-absent", "n", True)
        _option(ok.headers, "x-set", "n")
        _option(ok.headers, "x-keep", "n", None, 1)
        ok.headers_to_remove.extend(["x-gone", "host"])
        answer = readCheckResponse(response)
        self.assertTrue(answer.allowed)
        headers = _map((b"x-set", b"a"), (b"x-app", b"a"), (b"x-keep", b"a"), (b"x-gone", b"g"),
                       (b"host", b"h"))
        answer.applyToRequest(headers)
        self.assertEqual(list(headers.items()), [
            (b"x-app", b"a,n"), (b"host", b"h"), (b"x-set", b"n"), (b"x-keep", b"n")])
        self.assertTrue(answer.mutatesRequest())
        self.assertFalse(answer.mutatesResponse())

    def test_okResponseMutations(self):
        """
        C{response_headers_to_add}: added (append true, or the default
        action), then set (removed, added at the end), added if absent,
        overwritten if present.
        """
        response = external_auth_pb2.CheckResponse()
        add = response.ok_response.response_headers_to_add
        _option(add, "x-set", "r", False)
        _option(add, "x-add", "r")
        _option(add, "x-if-absent", "r", None, 1)
        _option(add, "x-present", "r", None, 1)
        _option(add, "x-over", "r", None, 3)
        _option(add, "x-over-absent", "r", None, 3)
        headers = _map((b"x-set", b"o"), (b"x-present", b"o"), (b"x-over", b"o"),
                       (b"x-tail", b"o"))
        readCheckResponse(response).applyToResponse(headers)
        self.assertEqual(list(headers.items()), [
            (b"x-present", b"o"), (b"x-tail", b"o"), (b"x-add", b"r"), (b"x-set", b"r"),
            (b"x-if-absent", b"r"), (b"x-over", b"r")])

    def test_denied(self):
        """
        A non-OK status is a denial: 403 unless C{denied_response.status}
        says otherwise; headers are added (an C{append: true} one only
        joins one the reply has).
        """
        response = external_auth_pb2.CheckResponse()
        response.status.code = 7
        answer = readCheckResponse(response)
        self.assertEqual((answer.allowed, answer.status, answer.body), (False, 403, b""))
        response.denied_response.status.code = 401
        response.denied_response.body = "no"
        _option(response.denied_response.headers, "x-d", "1")
        _option(response.denied_response.headers, "x-d", "2")
        _option(response.denied_response.headers, "x-j", "1", True)
        _option(response.denied_response.headers, "x-k", "1", True)
        answer = readCheckResponse(response)
        headers = _map((b"x-j", b"0"))
        answer.applyToReply(headers)
        self.assertEqual((answer.status, answer.body), (401, b"no"))
        self.assertEqual(list(headers.items()),
                         [(b"x-j", b"0,1"), (b"x-d", b"1"), (b"x-d", b"2")])


class CheckRequestTests(SynchronousTestCase):

    def test_network(self):
        """
        Envoy's network check: the addresses and an empty
        C{metadata_context}, no C{request}, no route metadata.
        """
        info = StreamInfo(Clock())
        info.downstreamRemoteAddress = ("127.0.0.1", 5000)
        info.downstreamLocalAddress = ("127.0.0.1", 80)
        request = checkRequest(info, 12.5)
        attributes = request.attributes
        self.assertEqual(attributes.source.address.socket_address.port_value, 5000)
        self.assertEqual(attributes.destination.address.socket_address.port_value, 80)
        self.assertFalse(attributes.HasField("request"))
        self.assertTrue(attributes.HasField("metadata_context"))
        self.assertFalse(attributes.HasField("route_metadata_context"))

    def test_http(self):
        """An HTTP check carries the time, what C{http} fills, the extensions."""
        info = StreamInfo(Clock())

        def fill(http):
            http.method = "GET"

        request = checkRequest(info, 12.5, {"k": "v"}, fill)
        attributes = request.attributes
        self.assertEqual(attributes.request.time.ToNanoseconds(), 12500000000)
        self.assertEqual(attributes.request.http.method, "GET")
        self.assertEqual(dict(attributes.context_extensions), {"k": "v"})
        self.assertTrue(attributes.HasField("route_metadata_context"))
