"""
End-to-end comparison of C{envoy.filters.http.jwt_authn}: a real
C{twistd -n envoy} and a real Envoy 1.40 with the same config (three
providers: a local JWKS forwarding the token, its payload and three claims;
a remote JWKS fetched through a cluster from a JWKS server started here,
tokens in a query parameter or a cookie; a custom header with a prefix),
rules with C{requires_any}, C{requires_all}, C{allow_missing},
C{allow_missing_or_failed}, C{provider_and_audiences} and a
C{requirement_map} entry, and a route that disables the filter.

Tokens are made here with an RSA key: valid, expired, not yet valid,
wrong audience, unknown issuer, bad signature, unknown kid, no kid, HS256,
and malformed ones. Every reply (status line, headers in order, body,
what the origin received) and the C{jwt_authn} stats must be the same.
"""

import base64
import json
import re
import time
from http.server import BaseHTTPRequestHandler

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, cluster, httpListener
from tests.e2e.harness import (
    SharedFixture,
    adminStats,
    freePort,
    httpOrigin,
    rawRequest,
    startProxy,
    stopAll,
)
from tests.e2e.harness import exchangeOne as _exchange


def makeTokens():
    """A JWKS (one RSA key, kid k1) and tokens of every kind, by name."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    now = int(time.time())

    def token(iss="https://local.example", aud="api", exp=now + 3600, kid="k1", signer=key,
              **extra):
        claims = {"iss": iss, "sub": "alice", "aud": aud, "exp": exp,
                  "nested": {"key": "v1"}, "n": 5}
        claims.update(extra)
        if exp is None:
            del claims["exp"]
        return jwt.encode(claims, signer, algorithm="RS256",
                          headers={"kid": kid} if kid else None)

    badJson = base64.urlsafe_b64encode(b"{nope").rstrip(b"=").decode() + ".e30.c2ln"
    tokens = {
        "good": token(), "expired": token(exp=now - 3600), "wrongaud": token(aud="other"),
        "wrongiss": token(iss="https://nobody"), "badsig": token(signer=other),
        "nbf": token(nbf=now + 3600), "noexp": token(exp=None), "nokid": token(kid=None),
        "otherkid": token(kid="k9"), "remote": token(iss="https://remote.example"),
        "custom": token(iss="https://custom.example"),
        "hs256": jwt.encode({"iss": "https://local.example", "aud": "api", "exp": now + 3600},
                            "a-secret-of-thirty-two-bytes-or-more", algorithm="HS256"),
        "malformed": "abc", "garbage": "a.b.c", "badjson": badJson,
    }
    return {"keys": [jwk]}, tokens


def _jwksHandler(body, fetches):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            fetches.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        out = json.dumps({"method": self.command, "path": self.path,
                          "headers": [[k.lower(), v] for k, v in self.headers.items()]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


CONFIG = bootstrap(
    listeners=[
        httpListener("jwt", "%(main)d", routes="""
            - match: { prefix: "/skip/" }
              route: { cluster: origin }
              typed_per_filter_config:
                envoy.filters.http.jwt_authn:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig
                  disabled: true
            - match: { prefix: "/" }
              route: { cluster: origin }
            """, httpFilters="""
            - name: envoy.filters.http.jwt_authn
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                providers:
                  local:
                    issuer: https://local.example
                    audiences: [api]
                    local_jwks: { inline_string: '%(jwks)s' }
                    forward: true
                    forward_payload_header: x-jwt-payload
                    claim_to_headers:
                    - { header_name: x-sub, claim_name: sub }
                    - { header_name: x-nested, claim_name: nested.key }
                    - { header_name: x-n, claim_name: "n" }
                  remote:
                    issuer: https://remote.example
                    remote_jwks:
                      http_uri: { uri: "http://jwks.local/keys", cluster: jwks, timeout: 1s }
                      cache_duration: 300s
                    from_params: [token]
                    from_cookies: [jwt]
                  custom:
                    issuer: https://custom.example
                    local_jwks: { inline_string: '%(jwks)s' }
                    from_headers: [{ name: x-token, value_prefix: "Token " }]
                    forward: true
                rules:
                - match: { prefix: /public }
                - match: { prefix: /any }
                  requires: { requires_any: { requirements: [{ provider_name: local }, { provider_name: remote }] } }
                - match: { prefix: /all }
                  requires: { requires_all: { requirements: [{ provider_name: local }, { provider_name: custom }] } }
                - match: { prefix: /optional }
                  requires: { requires_any: { requirements: [{ provider_name: local }, { allow_missing: {} }] } }
                - match: { prefix: /failed }
                  requires: { requires_any: { requirements: [{ provider_name: local }, { allow_missing_or_failed: {} }] } }
                - match: { prefix: /named }
                  requirement_name: named
                - match: { prefix: /remote }
                  requires: { provider_name: remote }
                - match: { prefix: /aud }
                  requires: { provider_and_audiences: { provider_name: local, audiences: [other] } }
                - match: { prefix: / }
                  requires: { provider_name: local }
                requirement_map:
                  named: { provider_name: custom }
            """),
    ],
    clusters=[cluster("origin"), cluster("jwks", "%(jwksport)d")])


def cases(tokens):
    """The requests compared, raw."""
    bearer = lambda name: "authorization: Bearer " + tokens[name]  # noqa: E731
    out = [rawRequest("/x/echo", bearer(name)) for name in sorted(tokens)]
    out += [
        rawRequest("/x/echo"), rawRequest("/x/echo?a=b"),
        rawRequest("/x/echo", "authorization: Basic abc"),
        rawRequest("/x/echo", "authorization: bearer " + tokens["good"]),
        rawRequest("/public/echo"), rawRequest("/skip/echo"),
        rawRequest("/any/echo", bearer("remote")), rawRequest("/any/echo"),
        rawRequest("/any/echo", bearer("expired")),
        rawRequest("/remote/echo?token=" + tokens["remote"] + "&x=1"),
        rawRequest("/remote/echo?a=1&token=" + tokens["remote"] + "&x=1"),
        rawRequest("/remote/echo?a=1&token=" + tokens["remote"]),
        rawRequest("/remote/echo?token=" + tokens["remote"] + "&token=zz"),
        rawRequest("/remote/echo?a=1&token=" + tokens["remote"] + "&b"),
        rawRequest("/remote/echo", "cookie: a=b; jwt=" + tokens["remote"]),
        rawRequest("/remote/echo", bearer("remote")),
        rawRequest("/all/echo", bearer("good"), "x-token: Token " + tokens["custom"]),
        rawRequest("/all/echo", bearer("good")),
        rawRequest("/optional/echo"), rawRequest("/optional/echo", bearer("expired")),
        rawRequest("/failed/echo", bearer("expired")),
        rawRequest("/named/echo", "x-token: Token " + tokens["custom"]),
        rawRequest("/named/echo", "x-token: " + tokens["custom"]),
        rawRequest("/aud/echo", bearer("good")),
        rawRequest("/x/echo", bearer("good"), bearer("expired")),
        rawRequest("/x/echo", bearer("good"), "x-jwt-payload: spoofed", "x-sub: spoofed"),
    ]
    return out




def _masked(raw):
    raw = re.sub(rb"date: [^\r]*\r\n", b"", raw)
    raw = re.sub(rb'"x-request-id", "[^"]*"', b'"x-request-id", "R"', raw)
    raw = re.sub(rb'"host", "[^"]*"', b'"host", "H"', raw)
    return re.sub(rb"x-envoy-upstream-service-time: \d+", b"x-envoy-upstream-service-time: N",
                  raw)


class _Deployment:
    def __init__(self, real, jwks, origin, jwksPort):
        self.admin, self.port = freePort(), freePort()
        config = CONFIG % dict(admin=self.admin, main=self.port, origin=origin,
                               jwksport=jwksPort, jwks=jwks)
        self.proxy = startProxy(real, config, self.port, self.admin)

    def stats(self):
        return {n: v for n, v in adminStats(self.admin).items() if ".jwt_authn." in n}

    def stop(self):
        self.proxy.stop()


class JwtAuthnSideBySideTests(SharedFixture, SynchronousTestCase):
    """Envoy 1.40 and txenvoy, the same jwt_authn config, the same requests."""

    @classmethod
    def startFixture(cls):
        jwks, cls.tokens = makeTokens()
        cls.fetches = []
        cls.servers = [httpOrigin(_EchoHandler),
                       httpOrigin(_jwksHandler(json.dumps(jwks).encode(), cls.fetches))]
        origin, jwksPort = (s.server_address[1] for s in cls.servers)
        # A single-quoted YAML string: only its quotes are doubled.
        inline = json.dumps(jwks).replace("'", "''")
        cls.envoy = cls.txenvoy = None
        try:
            cls.envoy = _Deployment(True, inline, origin, jwksPort)
            cls.txenvoy = _Deployment(False, inline, origin, jwksPort)
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        stopAll(cls.envoy, cls.txenvoy, *cls.servers)

    def test_sideBySide(self):
        """
        Every request alike (Envoy's 401/403 bodies, www-authenticate,
        forwarded payload and claims); the same stats; one JWKS fetch each.
        """
        for raw in cases(self.tokens):
            expected = _masked(_exchange(self.envoy.port, raw))
            got = _masked(_exchange(self.txenvoy.port, raw))
            self.assertEqual(got, expected, raw)
        self.assertEqual(self.txenvoy.stats(), self.envoy.stats())
        self.assertEqual(self.fetches, ["/keys", "/keys"])
