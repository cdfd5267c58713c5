"""
Tests for L{txenvoy.http.local_reply} and L{txenvoy.http.filter}.
"""

from google.protobuf import json_format
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.http.filter import FilterHeadersStatus, PassThroughFilter, filterRoles
from txenvoy.http.headers import RequestHeaders
from txenvoy.http.local_reply import (
    DEFAULT_LOCAL_REPLY,
    compileLocalReplyConfig,
    headerView,
    makeLocalReply,
)
from txenvoy.network.stream_info import StreamInfo


def compiled(d):
    return compileLocalReplyConfig(
        json_format.ParseDict(d, hcm_pb2.LocalReplyConfig()), "hcm.local_reply_config")


class MakeLocalReplyTests(SynchronousTestCase):

    def setUp(self):
        self.info = StreamInfo(Clock())

    def test_body(self):
        """Envoy 1.40: content-length then content-type: text/plain."""
        headers, body = makeLocalReply(DEFAULT_LOCAL_REPLY, self.info, None, 503,
                                       b"no healthy upstream")
        self.assertEqual(headers.status, 503)
        self.assertEqual(headers.headers.items(), [(b"content-length", b"19"),
                                                   (b"content-type", b"text/plain")])
        self.assertEqual(body, b"no healthy upstream")

    def test_emptyBody(self):
        """Envoy 1.40: no body, no content-type (the codec adds content-length: 0)."""
        headers, body = makeLocalReply(DEFAULT_LOCAL_REPLY, self.info, None, 404, b"")
        self.assertEqual((headers.headers.items(), body), ([], b""))

    def test_modifyHeadersFirst(self):
        headers, _ = makeLocalReply(DEFAULT_LOCAL_REPLY, self.info, None, 302, b"x",
                                    lambda h: h.headers.add(b"location", b"/y"))
        self.assertEqual([n for n, _ in headers.headers.items()],
                         [b"location", b"content-length", b"content-type"])

    def test_contentTypeKept(self):
        headers, _ = makeLocalReply(DEFAULT_LOCAL_REPLY, self.info, None, 200, b"{}",
                                    lambda h: h.headers.add(b"content-type", b"a/b"))
        self.assertEqual(headers.headers.getAll(b"content-type"), [b"a/b"])

    def test_firstMatchingMapperWins(self):
        config = compiled({"mappers": [
            {"filter": {"status_code_filter": {"comparison": {
                "op": "GE", "value": {"default_value": 500, "runtime_key": "a"}}}},
             "status_code": 502, "body": {"inline_string": "first"}},
            {"filter": {"status_code_filter": {"comparison": {
                "op": "GE", "value": {"default_value": 400, "runtime_key": "b"}}}},
             "body": {"inline_string": "second"}}]})
        headers, body = makeLocalReply(config, self.info, None, 503, b"x")
        self.assertEqual((headers.status, body), (502, b"first"))
        headers, body = makeLocalReply(config, self.info, None, 404, b"x")
        self.assertEqual((headers.status, body), (404, b"second"))
        headers, body = makeLocalReply(config, self.info, None, 200, b"x")
        self.assertEqual((headers.status, body), (200, b"x"))

    def test_formatOverrideAndContentType(self):
        config = compiled({
            "mappers": [{"filter": {"status_code_filter": {"comparison": {
                "op": "EQ", "value": {"default_value": 404, "runtime_key": "a"}}}},
                "body_format_override": {"text_format": "NF %LOCAL_REPLY_BODY%",
                                         "content_type": "text/html"}}],
            "body_format": {"text_format": "<%LOCAL_REPLY_BODY%>"}})
        headers, body = makeLocalReply(config, self.info, None, 404, b"gone")
        self.assertEqual(body, b"NF gone")
        self.assertEqual(headers.headers.get(b"content-type"), b"text/html")
        headers, body = makeLocalReply(config, self.info, None, 503, b"down")
        self.assertEqual(body, b"<down>")

    def test_formatReadsRequest(self):
        config = compiled({"body_format": {"text_format": "%REQ(:PATH)% %REQ(X-A)%"}})
        request = RequestHeaders(b"GET", b"/p", b"a")
        request.headers.add(b"x-a", b"1")
        _, body = makeLocalReply(config, self.info, request, 404, b"")
        self.assertEqual(body, b"/p 1")
        _, body = makeLocalReply(config, self.info, headerView(request), 404, b"")
        self.assertEqual(body, b"/p 1")

    def test_mapperNeedsFilter(self):
        self.assertRaises(ConfigError, compiled, {"mappers": [{"status_code": 400}]})

    def test_unsupportedFilter(self):
        self.assertRaises(UnsupportedField, compiled, {"mappers": [
            {"filter": {"header_filter": {"header": {"name": "x"}}}}]})


class FilterRolesTests(SynchronousTestCase):

    def test_passThroughSides(self):
        class DecodeOnly(PassThroughFilter):
            def decodeHeaders(self, headers, endStream):
                return FilterHeadersStatus.Continue

        class EncodeOnly(PassThroughFilter):
            def encodeData(self, data, endStream):
                return 0

        self.assertEqual(filterRoles(DecodeOnly(None)), (True, False))
        self.assertEqual(filterRoles(EncodeOnly(None)), (False, True))
        self.assertEqual(filterRoles(PassThroughFilter(None)), (False, False))

    def test_plainObject(self):
        class Both:
            def decodeHeaders(self, h, e):
                return 0

            def decodeData(self, d, e):
                return 0

            def encodeHeaders(self, h, e):
                return 0

            def encodeData(self, d, e):
                return 0

        self.assertEqual(filterRoles(Both()), (True, True))
