"""
Tests for L{txenvoy.upstream.http_protocol_options}: every field of a
cluster's C{HttpProtocolOptions} is implemented, ignored as Envoy ignores it
for HTTP/1.1 upstreams, or refused with its path.
"""

from twisted.trial.unittest import SynchronousTestCase

from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from txenvoy.config.errors import (
    ConfigError,
    ConfigErrors,
    UnsupportedField,
    collectErrors,
    pathOf,
)
from txenvoy.http.headers import RequestHeaders
from txenvoy.upstream.http_protocol_options import (
    IGNORED,
    IMPLEMENTED,
    REFUSED,
    TransportSocketOptions,
    parseAuthorityHost,
)

from tests.upstream.test_cluster import PATH, compile_

KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
OPATH = PATH + ".typed_extension_protocol_options[%s]" % (KEY,)

TLS_SOCKET = {"name": "envoy.transport_sockets.tls", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"}}


def options(**fields):
    """A cluster with these HttpProtocolOptions fields, compiled."""
    info, _ = compile_(typed_extension_protocol_options={
        KEY: dict({"@type": "type.googleapis.com/" + KEY}, **fields)})
    return info


class CoverageTests(SynchronousTestCase):
    """Nothing in the message is accepted without being accounted for."""

    def test_everyFieldListed(self):
        """
        Every field of HttpProtocolOptions and of the messages txenvoy reads
        inside it is implemented, ignored or refused; none twice.
        """
        descriptor = http_protocol_options_pb2.HttpProtocolOptions.DESCRIPTOR
        walked = {"": descriptor}
        for relative in IMPLEMENTED:
            if relative:
                d = descriptor
                for part in relative.split("."):
                    d = d.fields_by_name[part].message_type
                walked[relative] = d
        self.assertEqual(sorted(walked), sorted(IMPLEMENTED))
        for relative, d in walked.items():
            for field in d.fields:
                where = "%s.%s" % (relative, field.name) if relative else field.name
                homes = [field.name in IMPLEMENTED.get(relative, ()),
                         field.name in IGNORED.get(relative, ()), where in REFUSED]
                self.assertEqual(homes.count(True), 1, where)
        for where in REFUSED:
            relative, _, name = where.rpartition(".")
            self.assertIn(relative, walked, where)
            self.assertIn(name, walked[relative].fields_by_name, where)

    def test_everyRefusedFieldNamesItsPath(self):
        """Each refused field, set, is reported at its own path with its reason."""
        values = {
            "http_filters": [{"name": "envoy.filters.http.upstream_codec"}],
            "auto_config.http3_protocol_options": {},
            "auto_config.alternate_protocols_cache_options": {"name": "x"},
            "auto_config.http_protocol_options.header_key_format": {"proper_case_words": {}},
            "auto_config.http_protocol_options.allow_chunked_length": True,
            "auto_config.http_protocol_options.send_fully_qualified_url": True,
            "auto_config.http_protocol_options.allow_custom_methods": True,
            "use_downstream_protocol_config.http3_protocol_options": {},
            "use_downstream_protocol_config.http_protocol_options.header_key_format": {
                "proper_case_words": {}},
            "use_downstream_protocol_config.http_protocol_options.allow_chunked_length": True,
            "use_downstream_protocol_config.http_protocol_options.send_fully_qualified_url":
                True,
            "use_downstream_protocol_config.http_protocol_options.allow_custom_methods": True,
            "explicit_http_config.http3_protocol_options": {},
            "header_validation_config": {"name": "x"},
            "outlier_detection": {},
            "request_mirror_policies": [{"cluster": "c1"}],
            "hash_policy": [{"header": {"header_name": "x"}}],
            "retry_policy": {"retry_on": "5xx"},
            "explicit_http_config.http_protocol_options.header_key_format": {
                "proper_case_words": {}},
            "explicit_http_config.http_protocol_options.allow_chunked_length": True,
            "explicit_http_config.http_protocol_options.send_fully_qualified_url": True,
            "explicit_http_config.http_protocol_options.allow_custom_methods": True,
        }
        self.assertEqual(sorted(values), sorted(REFUSED))
        for where, value in values.items():
            fields = {}
            node = fields
            parts = where.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
            e = self.assertRaises(UnsupportedField, options, **fields)
            self.assertEqual(e.path, OPATH + "." + where)
            self.assertIn(REFUSED[where], str(e))

    def test_allRefusalsInOneRun(self):
        """In a collecting run, every refused field is reported, once."""
        def load():
            with collectErrors():
                options(http_filters=[{"name": "envoy.filters.http.upstream_codec"}],
                        retry_policy={"retry_on": "5xx"},
                        common_http_protocol_options={"idle_timeout": "1s"},
                        hash_policy=[{"header": {"header_name": "x"}}])
        e = self.assertRaises(ConfigErrors, load)
        self.assertEqual(sorted(pathOf(error) for error in e.errors), [
            OPATH + ".hash_policy",
            OPATH + ".http_filters",
            OPATH + ".retry_policy"])


class CompiledTests(SynchronousTestCase):
    """What the implemented fields become on the ClusterInfo."""

    def test_common(self):
        info = options(common_http_protocol_options={
            "idle_timeout": "2s", "max_requests_per_connection": 3,
            "max_connection_duration": "4s", "max_headers_count": 20,
            "max_response_headers_kb": 90, "headers_with_underscores_action": "REJECT_REQUEST",
            "max_stream_duration": "1.5s"})
        self.assertEqual((info.upstreamIdleTimeout, info.maxRequestsPerConnection,
                          info.upstreamMaxConnectionDuration, info.upstreamMaxHeadersCount,
                          info.upstreamMaxResponseHeadersKb, info.upstreamMaxStreamDuration),
                         (2.0, 3, 4.0, 20, 90, 1.5))

    def test_defaults(self):
        info = options()
        self.assertEqual((info.upstreamMaxResponseHeadersKb, info.upstreamEnableTrailers,
                          info.upstreamHttpOptions), (60, False, None))

    def test_maxResponseHeadersKbRange(self):
        """Envoy's bounds: (0, 8192]."""
        e = self.assertRaises(ConfigError, options,
                              common_http_protocol_options={"max_response_headers_kb": 9000})
        self.assertIn(OPATH + ".common_http_protocol_options.max_response_headers_kb", str(e))

    def test_http1Options(self):
        """enable_trailers is acted on; server-side settings are accepted as Envoy does."""
        info = options(explicit_http_config={"http_protocol_options": {
            "enable_trailers": True, "accept_http_10": True, "allow_absolute_url": True}})
        self.assertTrue(info.upstreamEnableTrailers)

    def test_upstreamOptions(self):
        info = options(upstream_http_protocol_options={
            "auto_sni": True, "auto_san_validation": True,
            "override_auto_sni_header": "X-SNI"})
        u = info.upstreamHttpOptions
        self.assertEqual((u.autoSni, u.autoSanValidation, u.overrideHeader),
                         (True, True, b"x-sni"))
        self.assertIsNone(options(upstream_http_protocol_options={
            "override_auto_sni_header": "x-sni"}).upstreamHttpOptions)


def request(authority, *extra):
    headers = RequestHeaders(b"GET", b"/", authority)
    for name, value in extra:
        headers.headers.add(name, value)
    return headers


class OptionsForTests(SynchronousTestCase):
    """
    The per-request options, as Envoy's router derives them (compared with
    Envoy 1.40: the port is dropped, an IP address gets no SNI but is
    still verified, the override header wins when present).
    """

    def upstream(self, **fields):
        return options(upstream_http_protocol_options=fields).upstreamHttpOptions

    def test_autoSni(self):
        u = self.upstream(auto_sni=True)
        self.assertEqual(u.optionsFor(request(b"api.example.com:8443")),
                         TransportSocketOptions("api.example.com"))
        self.assertEqual(u.optionsFor(request(b"127.0.0.1:80")), TransportSocketOptions(""))

    def test_autoSanValidation(self):
        u = self.upstream(auto_sni=True, auto_san_validation=True)
        self.assertEqual(u.optionsFor(request(b"api.example.com")),
                         TransportSocketOptions("api.example.com", ("api.example.com",)))
        self.assertEqual(u.optionsFor(request(b"127.0.0.1")),
                         TransportSocketOptions("", ("127.0.0.1",)))

    def test_overrideHeader(self):
        u = self.upstream(auto_sni=True, override_auto_sni_header="x-sni")
        self.assertEqual(u.optionsFor(request(b"a.test", (b"x-sni", b"b.test:1"))),
                         TransportSocketOptions("b.test"))
        self.assertEqual(u.optionsFor(request(b"a.test")), TransportSocketOptions("a.test"))

    def test_equalOptionsShareAKey(self):
        self.assertEqual(hash(TransportSocketOptions("a", ("a",))),
                         hash(TransportSocketOptions("a", ("a",))))
        self.assertNotEqual(TransportSocketOptions("a"), TransportSocketOptions("a", ("a",)))

    def test_parseAuthority(self):
        self.assertEqual(parseAuthorityHost("a.test:80"), ("a.test", False))
        self.assertEqual(parseAuthorityHost("a.test"), ("a.test", False))
        self.assertEqual(parseAuthorityHost("10.0.0.1:80"), ("10.0.0.1", True))
        self.assertEqual(parseAuthorityHost("[::1]:80"), ("::1", True))
        self.assertEqual(parseAuthorityHost("a.test:x"), ("a.test:x", False))


class Http2UpstreamTests(SynchronousTestCase):
    """HTTP/2 upstreams: explicit, or the downstream's protocol."""

    def test_explicitHttp2(self):
        """explicit_http_config.http2_protocol_options: Envoy's upstream defaults."""
        info = options(explicit_http_config={"http2_protocol_options": {
            "initial_stream_window_size": 70000}})
        self.assertEqual(info.upstreamHttp2Options.initialStreamWindowSize, 70000)
        self.assertEqual(info.upstreamHttp2Options.maxConcurrentStreams, 2147483647)
        self.assertFalse(info.upstreamUseDownstreamProtocol)

    def test_useDownstreamProtocol(self):
        """use_downstream_protocol_config: HTTP/2 for HTTP/2 requests only."""
        info = options(use_downstream_protocol_config={"http2_protocol_options": {}})
        self.assertIsNotNone(info.upstreamHttp2Options)
        self.assertTrue(info.upstreamUseDownstreamProtocol)

    def test_autoConfig(self):
        """
        auto_config on a TLS cluster: HTTP/2 options for the connections
        whose handshake chooses h2, trailers for the HTTP/1.1 ones.
        """
        info, _ = compile_(transport_socket=TLS_SOCKET, typed_extension_protocol_options={
            KEY: {"@type": "type.googleapis.com/" + KEY, "auto_config": {
                "http_protocol_options": {"enable_trailers": True},
                "http2_protocol_options": {"initial_stream_window_size": 70000}}}})
        self.assertTrue(info.upstreamAutoConfig)
        self.assertTrue(info.upstreamEnableTrailers)
        self.assertEqual(info.upstreamHttp2Options.initialStreamWindowSize, 70000)
        self.assertFalse(options().upstreamAutoConfig)

    def test_autoConfigNeedsTls(self):
        """
        auto_config without a transport socket that does ALPN: Envoy 1.40's
        error, "ALPN configured for cluster ... which has a non-ALPN
        transport socket".
        """
        e = self.assertRaises(ConfigError, options, auto_config={})
        self.assertEqual(str(e), "%s.auto_config: ALPN configured for cluster %s which has "
                         "a non-ALPN transport socket" % (OPATH, compile_()[0].name))

    def test_unsupportedHttp2Field(self):
        """An Http2ProtocolOptions field txenvoy does not read is refused with its path."""
        e = self.assertRaises(UnsupportedField, options, explicit_http_config={
            "http2_protocol_options": {"allow_metadata": True}})
        self.assertEqual(e.path,
                         OPATH + ".explicit_http_config.http2_protocol_options.allow_metadata")
