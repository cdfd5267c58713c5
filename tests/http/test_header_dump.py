"""
Tests for L{txenvoy.http.header_dump}.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.header_dump import dumpRequestHeaders, dumpResponseHeaders
from txenvoy.http.headers import HeaderMap, RequestHeaders, ResponseHeaders


class HeaderDumpTests(SynchronousTestCase):

    def test_request(self):
        """
        Envoy 1.40's C{request headers complete} dump: C{:authority},
        C{:path}, C{:method}, then the ordinary headers, one per line.
        """
        headers = HeaderMap()
        headers.add(b"user-agent", b"curl/7.88.1")
        headers.add(b"accept", b"*/*")
        request = RequestHeaders(b"GET", b"/ok", b"127.0.0.1:18401", headers=headers)
        self.assertEqual(dumpRequestHeaders(request),
                         "':authority', '127.0.0.1:18401'\n':path', '/ok'\n':method', 'GET'\n"
                         "'user-agent', 'curl/7.88.1'\n'accept', '*/*'\n")

    def test_routerRequest(self):
        """The router's dump adds C{:scheme} after C{:method}; CONNECT has no path."""
        request = RequestHeaders(b"CONNECT", None, b"example.com:443")
        self.assertEqual(dumpRequestHeaders(request, b"http"),
                         "':authority', 'example.com:443'\n':method', 'CONNECT'\n"
                         "':scheme', 'http'\n")

    def test_response(self):
        headers = HeaderMap()
        headers.add(b"server", b"envoy")
        self.assertEqual(dumpResponseHeaders(ResponseHeaders(503, headers)),
                         "':status', '503'\n'server', 'envoy'\n")
