"""
Tests for L{txenvoy.extensions.filters.http.jwt_authn} (and its token
helpers), on fake reactors. The replies are those Envoy 1.40 gave for the
same tokens (C{tests/e2e/test_jwt_authn.py} runs both side by side).
"""

import json

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txenvoy.config.errors import ConfigError
from txenvoy.extensions.filters.http._jwt import Jwt, JwtError, Status, parseJwks
from txenvoy.extensions.filters.http.jwt_authn import _withoutParam
from txenvoy.http.filter import FilterHeadersStatus
from txenvoy.interfaces import IHttpFilterFactory

from tests.extensions.filters.http.fakes import FakeCallbacks, compileFilter, request
from tests.http.hcm_harness import ROUTER, Harness

JWT_AUTHN = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
NOW = 1800000000
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwk(algorithm, public, kid, alg):
    entry = json.loads(algorithm.to_jwk(public))
    entry.update(kid=kid, alg=alg)
    return entry


JWKS = json.dumps({"keys": [
    _jwk(RSAAlgorithm, KEY.public_key(), "k1", "RS256"),
    _jwk(ECAlgorithm, EC_KEY.public_key(), "e1", "ES256"),
    {"kty": "oct", "kid": "h1", "alg": "HS256",
     "k": "YS1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcy1vci1tb3Jl"},
]})


def token(iss="https://local.example", aud="api", exp=NOW + 3600, key=KEY, alg="RS256",
          kid="k1", **claims):
    payload = {"iss": iss, "sub": "alice", "aud": aud, "exp": exp, "flag": True,
               "ratio": 1.5, "obj": {"a": 1}}
    payload.update(claims)
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def config(extra="", rules="rules: [{match: {prefix: /}, requires: {provider_name: local}}]"):
    return compileFilter(JWT_AUTHN, """
providers:
  local:
    issuer: https://local.example
    audiences: [api]
    local_jwks: {inline_string: '%s'}
    forward_payload_header: x-jwt-payload
    pad_forward_payload_header: true
    payload_in_metadata: claims
    claim_to_headers:
    - {header_name: x-flag, claim_name: flag}
    - {header_name: x-ratio, claim_name: ratio}
    - {header_name: x-obj, claim_name: obj}
%s
%s
""" % (JWKS, extra, rules))


class TokenTests(SynchronousTestCase):
    """L{Jwt} and L{parseJwks}: Envoy's statuses, key matching."""

    def status(self, text):
        return self.assertRaises(JwtError, Jwt, text).status

    def test_badFormat(self):
        self.assertEqual(self.status("abc"), Status.JwtBadFormat)
        self.assertEqual(self.status("a.b.c"), Status.JwtHeaderParseErrorBadBase64)

    def test_badAlg(self):
        header = "eyJhbGciOiJub25lIn0"     # {"alg":"none"}
        self.assertEqual(self.status(header + ".e30.c2ln"), Status.JwtHeaderNotImplementedAlg)

    def test_payloadTypes(self):
        self.assertEqual(self.status(jwt.encode({"exp": "soon"}, KEY, algorithm="RS256")),
                         Status.JwtPayloadParseErrorExpNotInteger)
        self.assertEqual(self.status(jwt.encode({"aud": 3}, KEY, algorithm="RS256")),
                         Status.JwtPayloadParseErrorAudNotString)

    def test_algorithms(self):
        """RS256, ES256 and HS256 keys, each found by kid and alg."""
        jwks = parseJwks(JWKS)
        jwks.verify(Jwt(token()))
        jwks.verify(Jwt(token(key=EC_KEY, alg="ES256", kid="e1")))
        jwks.verify(Jwt(token(key=b"a-secret-of-thirty-two-bytes-or-more", alg="HS256",
                              kid="h1")))
        e = self.assertRaises(JwtError, jwks.verify, Jwt(token(kid="e1")))
        self.assertEqual(e.status, Status.JwksKidAlgMismatch)

    def test_invalidJwks(self):
        self.assertRaises(ValueError, parseJwks, "{nope")
        self.assertRaises(ValueError, parseJwks, '{"keys": [{"kty": "RSA"}]}')


class ConfigTests(SynchronousTestCase):

    def test_factory(self):
        verifyObject(IHttpFilterFactory, config())

    def test_unknownProvider(self):
        e = self.assertRaises(ConfigError, config, rules="rules: [{match: {prefix: /}, "
                                                         "requires: {provider_name: nope}}]")
        self.assertIn("rules[0].requires.provider_name: Wrong requirement config: provider "
                      "'nope' is not found", str(e))

    def test_invalidLocalJwks(self):
        """Envoy 1.40's message for a local JWKS it cannot read."""
        e = self.assertRaises(ConfigError, compileFilter, JWT_AUTHN,
                              "providers: {p: {local_jwks: {inline_string: '{x'}}}")
        self.assertIn("Provider 'p' in jwt_authn config has invalid local jwks: Jwks is an "
                      "invalid JSON", str(e))

    def test_unreadFieldRefused(self):
        e = self.assertRaises(ConfigError, compileFilter, JWT_AUTHN,
                              "providers: {p: {local_jwks: {inline_string: '%s'}, "
                              "subjects: {prefix: a}}}" % (JWKS,))
        self.assertIn("typed_config.providers[p].subjects", str(e))


class FilterTests(SynchronousTestCase):
    """One request at a time, with fake callbacks."""

    def run_(self, *headers, path="/x", factory=None):
        callbacks = FakeCallbacks()
        callbacks.clock.advance(NOW)
        f = (factory or config()).createFilter(callbacks)
        head = request("GET", path, list(headers))
        status = f.decodeHeaders(head, True)
        return status, head, callbacks

    def test_allowed(self):
        """The payload (padded), the claims as Envoy writes them, the metadata."""
        good = token()
        status, head, callbacks = self.run_(("authorization", "Bearer " + good))
        self.assertEqual(status, FilterHeadersStatus.Continue)
        entries = head.headers
        payload = good.split(".")[1]
        self.assertEqual(entries.get(b"x-jwt-payload"),
                         (payload + "=" * (-len(payload) % 4)).encode())
        self.assertEqual(entries.get(b"x-flag"), b"true")
        self.assertEqual(entries.get(b"x-ratio"), b"1.5")
        self.assertEqual(entries.get(b"x-obj"), None)
        self.assertEqual(entries.get(b"authorization"), None)
        self.assertEqual(callbacks.streamInfo.dynamicMetadata[
            "envoy.filters.http.jwt_authn"]["claims"]["sub"], "alice")
        self.assertEqual(callbacks.counter("http.ingress_http.jwt_authn.allowed"), 1)

    def test_missing(self):
        """Envoy 1.40: 401, "Jwt is missing", a challenge without an error."""
        status, head, callbacks = self.run_(path="/x?a=b")
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.body), (401, b"Jwt is missing"))
        self.assertEqual(reply.header("www-authenticate"),
                         b'Bearer realm="http://example.com/x?a=b"')
        self.assertEqual(reply.details, "jwt_authn_access_denied{Jwt_is_missing}")

    def test_expired(self):
        status, head, callbacks = self.run_(("authorization", "Bearer " + token(exp=NOW - 61)))
        [reply] = callbacks.localReplies
        self.assertEqual((reply.code, reply.body), (401, b"Jwt is expired"))
        self.assertEqual(reply.header("www-authenticate"),
                         b'Bearer realm="http://example.com/x", error="invalid_token"')

    def test_clockSkew(self):
        """60 seconds of skew by default, as Envoy allows."""
        status, _, _ = self.run_(("authorization", "Bearer " + token(exp=NOW - 59)))
        self.assertEqual(status, FilterHeadersStatus.Continue)

    def test_audienceForbidden(self):
        status, head, callbacks = self.run_(("authorization", "Bearer " + token(aud="x")))
        self.assertEqual(callbacks.localReplies[0].code, 403)

    def test_corsPreflight(self):
        factory = config("bypass_cors_preflight: true")
        callbacks = FakeCallbacks()
        f = factory.createFilter(callbacks)
        head = request("OPTIONS", "/x", [("origin", "o"), ("access-control-request-method",
                                                           "GET")])
        self.assertEqual(f.decodeHeaders(head, True), FilterHeadersStatus.Continue)
        self.assertEqual(callbacks.counter(
            "http.ingress_http.jwt_authn.cors_preflight_bypassed"), 1)

    def test_withoutParam(self):
        """Envoy 1.40 writes the query back without the token's parameter."""
        self.assertEqual(_withoutParam(b"/p?token=t&x=1", b"token"), b"/p?x=1")
        self.assertEqual(_withoutParam(b"/p?token=t&token=u", b"token"), b"/p")
        self.assertEqual(_withoutParam(b"/p?a=1&token=t&b", b"token"), b"/p?a=1&b=")


REMOTE = {
    "@type": "type.googleapis.com/" + JWT_AUTHN,
    "providers": {"remote": {
        "issuer": "https://local.example",
        "remote_jwks": {"http_uri": {"uri": "http://keys.local/jwks", "cluster": "dead",
                                     "timeout": "1s"},
                        "cache_duration": "10s"}}},
    "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "remote"}}],
}
JWKS_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
                 % (len(JWKS), JWKS.encode()))


class RemoteJwksTests(SynchronousTestCase):
    """C{remote_jwks} through a cluster (the harness's C{dead}, 127.0.0.1:8081)."""

    def setUp(self):
        self.h = Harness(self, routes='[{match: {prefix: "/"}, route: {cluster: origin}}]',
                         filters=[{"name": "envoy.filters.http.jwt_authn",
                                   "typed_config": REMOTE}, ROUTER])
        self.h.reactor.advance(NOW)

    def send(self):
        down = self.h.connect()
        down.send(b"GET /x HTTP/1.1\r\nhost: a\r\nauthorization: Bearer "
                  + token().encode() + b"\r\n\r\n")
        return down

    def test_fetchedThenCached(self):
        first = self.send()
        second = self.send()
        fetch = self.h.upstream()
        self.assertEqual(fetch.port, 8081)
        self.assertEqual(fetch.request()[0], "GET /jwks HTTP/1.1")
        self.assertEqual(fetch.request()[1][0], ("host", "keys.local"))
        fetch.respond(JWKS_RESPONSE)
        origins = [self.h.upstream(), self.h.upstream()]
        self.assertEqual([o.port for o in origins], [8080, 8080])
        for origin in origins:
            origin.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual([d.responses()[0].status for d in (first, second)], [200, 200])
        self.assertEqual(self.h.stat("http.ingress.jwt_authn.jwks_fetch_success"), 1)
        self.send()
        self.assertEqual(fetch.received().count(b"GET /jwks"), 1)

    def test_refreshedAfterCacheDuration(self):
        self.send()
        fetch = self.h.upstream()
        fetch.respond(JWKS_RESPONSE)
        self.h.advance(11)
        self.send()
        # Fetched again, on the kept-alive connection.
        self.assertEqual(fetch.received().count(b"GET /jwks"), 2)

    def test_fetchFails(self):
        """Envoy's answer when the key set cannot be fetched."""
        down = self.send()
        self.h.upstream(connect=False).fail()
        response = down.responses()[0]
        self.assertEqual((response.status, response.body), (401, b"Jwks remote fetch is failed"))
        self.assertEqual(self.h.stat("http.ingress.jwt_authn.jwks_fetch_failed"), 1)

    def test_noTokenNoFetch(self):
        down = self.h.connect()
        down.send(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertEqual(down.responses()[0].status, 401)
        self.assertEqual(self.h.upstreams(), [])
