"""
Tests for L{txenvoy.http.hash_policy}: Envoy's C{HashPolicyImpl} on one
request.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.http.hash_policy import (
    cookieValue,
    generateCookie,
    generateHash,
    makeSetCookieValue,
)
from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.router.config import HashPolicy
from txenvoy.network.stream_info import StreamInfo
from txenvoy.upstream.hashing import rotateCombine, xxHash64


def request(path=b"/", headers=()):
    return RequestHeaders(b"GET", path, b"example.com", headers=HeaderMap(list(headers)))


def info(remote=("10.1.2.3", 5555), local=("127.0.0.1", 10000)):
    si = StreamInfo(Clock())
    si.downstreamRemoteAddress = remote
    si.downstreamLocalAddress = local
    return si


class GenerateHashTests(SynchronousTestCase):
    """Each policy kind, and how several combine."""

    def test_noPolicyMatches(self):
        """No hash at all: the load balancer picks at random."""
        self.assertIsNone(generateHash((HashPolicy("header", b"x-user"),), request(), info()))

    def test_header(self):
        """xxHash64 of the value."""
        self.assertEqual(
            generateHash((HashPolicy("header", b"x-user"),),
                         request(headers=[(b"x-user", b"alice")]), info()),
            xxHash64(b"alice"))

    def test_headerValuesSorted(self):
        """
        Several values are sorted then chained, so that their order does not
        matter (Envoy's HeaderHashMethod).
        """
        policy = (HashPolicy("header", b"x-v"),)
        one = generateHash(policy, request(headers=[(b"x-v", b"b"), (b"x-v", b"a")]), info())
        two = generateHash(policy, request(headers=[(b"x-v", b"a"), (b"x-v", b"b")]), info())
        self.assertEqual(one, two)
        self.assertEqual(one, xxHash64(b"b", xxHash64(b"a")))

    def test_headerRewrite(self):
        """A regex_rewrite applies before hashing."""
        policy = (HashPolicy("header", b"x-v", rewrite=lambda v: v[:1]),)
        self.assertEqual(generateHash(policy, request(headers=[(b"x-v", b"abc")]), info()),
                         xxHash64(b"a"))

    def test_authority(self):
        """C{:authority} reads the request's authority."""
        self.assertEqual(generateHash((HashPolicy("header", b":authority"),), request(), info()),
                         xxHash64(b"example.com"))

    def test_sourceIp(self):
        """The client's IP address text, without the port."""
        self.assertEqual(generateHash((HashPolicy("source_ip"),), request(), info()),
                         xxHash64(b"10.1.2.3"))

    def test_queryParameter(self):
        """The first value, not percent-decoded; a bare name is an empty value."""
        policy = (HashPolicy("query_parameter", b"id"),)
        self.assertEqual(generateHash(policy, request(b"/p?x=1&id=a%20b&id=2"), info()),
                         xxHash64(b"a%20b"))
        self.assertEqual(generateHash(policy, request(b"/p?id"), info()), xxHash64(b""))
        self.assertIsNone(generateHash(policy, request(b"/p?idx=1"), info()))

    def test_filterState(self):
        """A string in the filter state hashes as its value."""
        si = info()
        si.filterState["k"] = "v"
        self.assertEqual(generateHash((HashPolicy("filter_state", "k"),), request(), si),
                         xxHash64(b"v"))
        self.assertIsNone(generateHash((HashPolicy("filter_state", "other"),), request(), si))

    def test_combined(self):
        """Each further hash is xored into the previous one rotated left."""
        policies = (HashPolicy("header", b"x-a"), HashPolicy("header", b"x-b"))
        r = request(headers=[(b"x-a", b"1"), (b"x-b", b"2")])
        self.assertEqual(generateHash(policies, r, info()),
                         rotateCombine(xxHash64(b"1"), xxHash64(b"2")))

    def test_terminal(self):
        """
        A terminal policy that leaves a hash ends the walk; one that yields
        none does not.
        """
        policies = (HashPolicy("header", b"x-a", terminal=True), HashPolicy("header", b"x-b"))
        both = request(headers=[(b"x-a", b"1"), (b"x-b", b"2")])
        self.assertEqual(generateHash(policies, both, info()), xxHash64(b"1"))
        onlyB = request(headers=[(b"x-b", b"2")])
        self.assertEqual(generateHash(policies, onlyB, info()), xxHash64(b"2"))

    def test_noRequest(self):
        """A TCP connection (no request) hashes by source IP and filter state only."""
        policies = (HashPolicy("header", b"x-a"), HashPolicy("source_ip"))
        self.assertEqual(generateHash(policies, None, info()), xxHash64(b"10.1.2.3"))

    def test_sourceIpFalseNeverTerminates(self):
        """C{source_ip: false} is no policy at all, terminal or not."""
        policies = (HashPolicy("header", b"x-a"), HashPolicy("none", terminal=True),
                    HashPolicy("header", b"x-b"))
        r = request(headers=[(b"x-a", b"1"), (b"x-b", b"2")])
        self.assertEqual(generateHash(policies, r, info()),
                         rotateCombine(xxHash64(b"1"), xxHash64(b"2")))


class CookieTests(SynchronousTestCase):
    """Cookie policies and the cookie Envoy generates."""

    def test_presentCookie(self):
        """The cookie's value (unquoted) is hashed."""
        policy = (HashPolicy("cookie", b"s"),)
        r = request(headers=[(b"cookie", b'a=1; s="xyz"')])
        self.assertEqual(generateHash(policy, r, info()), xxHash64(b"xyz"))

    def test_parse(self):
        """Envoy's parseCookieValue: first match wins, malformed parts skipped."""
        h = HeaderMap([(b"cookie", b"junk; s=1"), (b"cookie", b"s=2")])
        self.assertEqual(cookieValue(h, b"s"), b"1")
        self.assertEqual(cookieValue(h, b"t"), b"")

    def test_noTtlNoCookie(self):
        """Without a ttl a missing cookie gives no hash and no set-cookie."""
        made = []
        self.assertIsNone(generateHash((HashPolicy("cookie", b"s"),), request(), info(),
                                       made.append))
        self.assertEqual(made, [])

    def test_generated(self):
        """
        With a ttl, a missing cookie is made from the connection's addresses
        (Envoy: hex xxHash64 of remote then local address) and hashed.
        """
        policy = HashPolicy("cookie", b"s", cookieTtl=60, cookiePath="/p",
                            cookieAttributes=[("SameSite", "Strict"), ("Secure", "")])
        value, header = generateCookie(policy, info())
        self.assertEqual(value, b"%016x" % (xxHash64(b"10.1.2.3:5555127.0.0.1:10000"),))
        self.assertEqual(header, b's="' + value +
                         b'"; Max-Age=60; Path=/p; SameSite=Strict; Secure; HttpOnly')
        self.assertEqual(generateHash((policy,), request(), info(),
                                      lambda p: generateCookie(p, info())[0]),
                         xxHash64(value))

    def test_setCookieFormat(self):
        """Envoy's makeSetCookieValue leaves out a zero Max-Age and an empty Path."""
        self.assertEqual(makeSetCookieValue(b"n", b"v", "", 0, True, ()), b'n="v"; HttpOnly')
