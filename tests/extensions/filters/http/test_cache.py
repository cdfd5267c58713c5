"""
Tests for L{txenvoy.extensions.filters.http.cache}, with fake callbacks on
a fake clock; C{tests/e2e/test_cache.py} compares it with Envoy 1.40.
"""

import email.utils

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError
from txenvoy.http.filter import FilterHeadersStatus
from txenvoy.interfaces import IHttpFilterFactory

from tests.extensions.filters.http.fakes import compileFilter, makeFilter, request, response

CACHE = "envoy.extensions.filters.http.cache.v3.CacheConfig"
SIMPLE = """
typed_config:
  "@type": type.googleapis.com/envoy.extensions.http.cache.simple_http_cache.v3.SimpleHttpCacheConfig
allowed_vary_headers: [{exact: accept-language}]
max_body_bytes: 10
"""


class CacheTests(SynchronousTestCase):

    def setUp(self):
        self.config = compileFilter(CACHE, SIMPLE)

    def fetch(self, config, clock=None, headers=(), answer=None, body=b"body"):
        """One GET through a filter; C{answer} the origin's response head, if asked."""
        kw = {"clock": clock} if clock is not None else {}
        f, callbacks = makeFilter(config, CACHE, **kw)
        status = f.decodeHeaders(request("GET", "/p", headers=list(headers)), True)
        if status == FilterHeadersStatus.StopIteration:
            return "hit", callbacks.encoded[0][0]
        head = answer(callbacks.clock.seconds())
        f.encodeHeaders(head, False)
        f.encodeData(body, True)
        return "miss", head

    def answer(self, *extra):
        def make(now):
            return response(200, [("date", email.utils.formatdate(now, usegmt=True)),
                                  ("cache-control", "max-age=100")] + list(extra))
        return make

    def test_factory(self):
        verifyObject(IHttpFilterFactory, self.config)

    def test_ageGrows(self):
        """A kept response is served with its age, until it is stale."""
        f, callbacks = makeFilter(self.config, CACHE)
        clock = callbacks.clock
        clock.advance(1000)
        self.assertEqual(self.fetch(self.config, clock, answer=self.answer())[0], "miss")
        clock.advance(40)
        kind, head = self.fetch(self.config, clock, answer=self.answer())
        self.assertEqual((kind, head.headers.get(b"age")), ("hit", b"40"))
        clock.advance(61)
        self.assertEqual(self.fetch(self.config, clock, answer=self.answer())[0], "miss")

    def test_vary(self):
        """An allowed vary header keys the response by its value."""
        answer = self.answer(("vary", "accept-language"))
        self.assertEqual(self.fetch(self.config, headers=[("accept-language", "en")],
                                    answer=answer)[0], "miss")
        self.assertEqual(self.fetch(self.config, headers=[("accept-language", "fr")],
                                    answer=answer)[0], "miss")
        self.assertEqual(self.fetch(self.config, headers=[("accept-language", "en")],
                                    answer=answer)[0], "hit")

    def test_varyNotAllowed(self):
        """A vary header not allowed (or C{*}) keeps the response out."""
        for vary in ("x-other", "*"):
            config = compileFilter(CACHE, SIMPLE)
            answer = self.answer(("vary", vary))
            self.fetch(config, answer=answer)
            self.assertEqual(self.fetch(config, answer=answer)[0], "miss")

    def test_maxBodyBytes(self):
        """A body past C{max_body_bytes} is not kept."""
        self.fetch(self.config, answer=self.answer(), body=b"x" * 11)
        self.assertEqual(self.fetch(self.config, answer=self.answer())[0], "miss")

    def test_otherCache(self):
        """Only the simple HTTP cache is implemented; another is refused with its path."""
        e = self.assertRaises(ConfigError, compileFilter, CACHE, """
typed_config:
  "@type": type.googleapis.com/envoy.extensions.http.cache.file_system_http_cache.v3.FileSystemHttpCacheConfig
""")
        self.assertIn("typed_config.typed_config", str(e))
