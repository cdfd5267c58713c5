"""
Caches keyed by what clients send stay bounded in bytes, not only in
entries: header names in the HTTP/1 codecs, Host values in the route table.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.http.http1.test_server_codec import CodecTestMixin
from tests.router.test_config import DOMAINS, _route, _table
from txenvoy.http.http1 import codec, server_codec


class HeaderNameCacheTests(CodecTestMixin, SynchronousTestCase):

    def test_longNamesAreNotKept(self):
        """
        A header name past C{PLAIN_NAME_MAX_LENGTH} is lower-cased for the
        request but never kept in the shared name cache; a short one is.
        """
        long = b"X-" + b"Long" * 40
        short = b"X-Short-Name-For-Cache-Test"
        decoder = self.assertServed(b"GET / HTTP/1.1\r\nHost: a\r\n%s: 1\r\n%s: 2\r\n\r\n"
                                    % (long, short))
        self.assertIn((long.lower(), b"1"), list(decoder.headers.headers._entries))
        self.assertNotIn(long, codec.PLAIN_NAMES)
        self.assertEqual(codec.PLAIN_NAMES.get(short), short.lower())
        self.assertGreater(len(long), codec.PLAIN_NAME_MAX_LENGTH)
        self.assertIs(server_codec.PLAIN_NAMES, codec.PLAIN_NAMES)


class VirtualHostCacheTests(SynchronousTestCase):

    def test_longHostIsMatchedNotKept(self):
        """A Host value longer than a DNS name is matched each time, never cached."""
        table = _table(DOMAINS)
        host = b"x" * 5000 + b".example.com"
        for _ in range(2):
            self.assertEqual(_route(table, b"/", host).virtualHost.name, "suffix")
        self.assertNotIn(host, table._vhostCache)
        self.assertEqual(_route(table, b"/", b"y.example.com").virtualHost.name, "suffix")
        self.assertIn(b"y.example.com", table._vhostCache)
