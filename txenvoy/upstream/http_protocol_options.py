# -*- test-case-name: tests.upstream.test_http_protocol_options -*-
"""
A cluster's C{typed_extension_protocol_options}
C{envoy.extensions.upstreams.http.v3.HttpProtocolOptions}, read in full.

Every field of the message is in one of three lists, so that nothing set
in a config is dropped without a word:

 - L{IMPLEMENTED}: acted on by the HTTP/1.1 pool, its codec, the router and
   the upstream TLS socket;
 - L{IGNORED}: fields Envoy itself does not act on for an HTTP/1.1
   upstream (server-side settings of C{Http1ProtocolOptions}, the
   C{headers_with_underscores_action} that Envoy's HTTP/1 client codec never
   reads), accepted as Envoy accepts them;
 - L{REFUSED}: refused with their field path and the reason, until
   txenvoy implements them (upstream C{http_filters}, HTTP/3
   upstreams, ...).

C{upstream_http_protocol_options} (Envoy's C{auto_sni} and
C{auto_san_validation}) become L{TransportSocketOptions} per request: the
SNI and the certificate SAN to check are taken from the request's host (or
the C{override_auto_sni_header}), and the connection pools are keyed by
them, as Envoy hashes the transport socket options into its pool key.
"""

import ipaddress

from txenvoy.config.errors import ConfigError, UnsupportedField, report
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.config.registry import unpackAny
from txenvoy.http.http2.options import http2OptionsFromProto

__all__ = ["IMPLEMENTED", "IGNORED", "REFUSED", "UpstreamHttpOptions",
           "TransportSocketOptions", "compileHttpProtocolOptions", "parseAuthorityHost"]

#: Message path (relative to C{HttpProtocolOptions}) -> the fields txenvoy
#: implements there.
IMPLEMENTED = {
    "": ("common_http_protocol_options", "upstream_http_protocol_options",
         "explicit_http_config", "use_downstream_protocol_config", "auto_config"),
    "common_http_protocol_options": (
        "idle_timeout", "max_requests_per_connection", "max_connection_duration",
        "max_headers_count", "max_response_headers_kb", "max_stream_duration"),
    "upstream_http_protocol_options": (
        "auto_sni", "auto_san_validation", "override_auto_sni_header"),
    "explicit_http_config": ("http_protocol_options", "http2_protocol_options"),
    "explicit_http_config.http_protocol_options": ("enable_trailers",),
    "use_downstream_protocol_config": ("http_protocol_options", "http2_protocol_options"),
    "use_downstream_protocol_config.http_protocol_options": ("enable_trailers",),
    "auto_config": ("http_protocol_options", "http2_protocol_options"),
    "auto_config.http_protocol_options": ("enable_trailers",),
}

# Http1ProtocolOptions fields only a server (downstream) codec reads.
_HTTP1_SERVER_SIDE = (
    "allow_absolute_url", "accept_http_10", "default_host_for_http_10",
    "override_stream_error_on_invalid_http_message", "use_balsa_parser",
    "ignore_http_11_upgrade")

#: Fields that have no effect on an HTTP/1.1 upstream in Envoy either.
IGNORED = {
    "common_http_protocol_options": ("headers_with_underscores_action",),
    "explicit_http_config.http_protocol_options": _HTTP1_SERVER_SIDE,
    "use_downstream_protocol_config.http_protocol_options": _HTTP1_SERVER_SIDE,
    "auto_config.http_protocol_options": _HTTP1_SERVER_SIDE,
}

#: Field path -> why it is refused.
REFUSED = {
    "http_filters": "upstream HTTP filters",
    "explicit_http_config.http3_protocol_options": "HTTP/3 upstreams",
    "header_validation_config": "upstream header validators",
    "outlier_detection": "HTTP error matchers for outlier detection",
    "request_mirror_policies": "cluster request mirroring",
    "hash_policy": "cluster hash policies",
    "retry_policy": "cluster retry policies",
    "explicit_http_config.http_protocol_options.header_key_format": "upstream header case",
    "explicit_http_config.http_protocol_options.allow_chunked_length": "",
    "explicit_http_config.http_protocol_options.send_fully_qualified_url": "",
    "explicit_http_config.http_protocol_options.allow_custom_methods": "",
    "use_downstream_protocol_config.http_protocol_options.header_key_format":
        "upstream header case",
    "use_downstream_protocol_config.http_protocol_options.allow_chunked_length": "",
    "use_downstream_protocol_config.http_protocol_options.send_fully_qualified_url": "",
    "use_downstream_protocol_config.http_protocol_options.allow_custom_methods": "",
    "use_downstream_protocol_config.http3_protocol_options": "HTTP/3 upstreams",
    "auto_config.http3_protocol_options": "HTTP/3 upstreams",
    "auto_config.alternate_protocols_cache_options": "HTTP/3 upstreams",
    "auto_config.http_protocol_options.header_key_format": "upstream header case",
    "auto_config.http_protocol_options.allow_chunked_length": "",
    "auto_config.http_protocol_options.send_fully_qualified_url": "",
    "auto_config.http_protocol_options.allow_custom_methods": "",
}


class TransportSocketOptions:
    """
    Envoy's C{Network::TransportSocketOptions} for one upstream request:
    the server name to send and the SANs the certificate must have. Equal
    options share a connection pool.

    @ivar serverName: the SNI, or C{""} to leave the socket's own.
    @ivar verifySubjectAltNames: names one of which the certificate's SANs
        must match (C{auto_san_validation}), or C{()}.
    @ivar alpnFallback: ALPN names (C{bytes}) to offer when the TLS context
        configures none (Envoy's C{applicationProtocolFallback}: C{h2} and
        C{http/1.1} for C{auto_config}), or C{()}.
    """

    __slots__ = ("serverName", "verifySubjectAltNames", "alpnFallback", "_key")

    def __init__(self, serverName="", verifySubjectAltNames=(), alpnFallback=()):
        self.serverName = serverName
        self.verifySubjectAltNames = tuple(verifySubjectAltNames)
        self.alpnFallback = tuple(alpnFallback)
        self._key = (serverName, self.verifySubjectAltNames, self.alpnFallback)

    def __eq__(self, other):
        if not isinstance(other, TransportSocketOptions):
            return NotImplemented
        return self._key == other._key

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        return "<TransportSocketOptions sni=%r sans=%r alpn=%r>" % self._key

    def withAlpnFallback(self, protocols):
        """These options, offering C{protocols} by ALPN when nothing else is."""
        return TransportSocketOptions(self.serverName, self.verifySubjectAltNames, protocols)


def parseAuthorityHost(authority):
    """
    Envoy's C{Http::Utility::parseAuthority}: the host part of an
    authority without its port, and whether it is an IP address.

    @param authority: the authority, C{str}.
    @return: C{(host, isIpAddress)}.
    """
    host = authority
    if authority.startswith("["):
        end = authority.find("]")
        if end > 0:
            rest = authority[end + 1:]
            if rest == "" or (rest.startswith(":") and rest[1:].isdigit()):
                host = authority[1:end]
    else:
        head, sep, port = authority.rpartition(":")
        if sep and port.isdigit() and ":" not in head:
            host = head
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host, False
    return host, True


class UpstreamHttpOptions:
    """
    The compiled C{upstream_http_protocol_options}.

    @ivar autoSni: send the request's host as SNI.
    @ivar autoSanValidation: check the certificate's SAN against it.
    @ivar overrideHeader: the header to take the host from instead
        (lower case bytes), or C{b""}.
    """

    __slots__ = ("autoSni", "autoSanValidation", "overrideHeader", "_cache")

    def __init__(self, autoSni=False, autoSanValidation=False, overrideHeader=b""):
        self.autoSni = autoSni
        self.autoSanValidation = autoSanValidation
        self.overrideHeader = overrideHeader
        self._cache = {}

    @property
    def active(self):
        """Whether requests get per-request transport socket options."""
        return self.autoSni or self.autoSanValidation

    def optionsFor(self, headers):
        """
        The L{TransportSocketOptions} of one request (as Envoy's router
        computes them in C{decodeHeaders}, after the route's host rewrite).

        @param headers: the request's L{txenvoy.http.headers.RequestHeaders}.
        @return: L{TransportSocketOptions}, or C{None} when nothing applies.
        """
        value = headers.authority or b""
        if self.overrideHeader:
            override = headers.headers.get(self.overrideHeader)
            if override:
                value = override
        options = self._cache.get(value)
        if options is not None:
            return options
        host, isIp = parseAuthorityHost(value.decode("latin-1"))
        if not host:
            return None
        options = TransportSocketOptions(
            host if self.autoSni and not isIp else "",
            (host,) if self.autoSanValidation else ())
        if len(self._cache) < 1024:
            # A few hosts per cluster in practice; bounded all the same.
            self._cache[value] = options
        return options


def _relative(prefix, name):
    return "%s.%s" % (prefix, name) if prefix else name


def _check(message, relative, path):
    """
    Refuse, with their reasons, the fields of L{REFUSED} set in
    C{message}; then every other field not implemented or ignored.
    """
    rest = None
    for field, _ in message.ListFields():
        where = _relative(relative, field.name)
        if where in REFUSED:
            reason = REFUSED[where]
            report(UnsupportedField("%s.%s" % (path, field.name), reason))
            if rest is None:
                rest = type(message)()
                rest.CopyFrom(message)
            rest.ClearField(field.name)
    checkFields(message if rest is None else rest, IMPLEMENTED.get(relative, ()), path,
                IGNORED.get(relative, ()))


def compileHttpProtocolOptions(anyMsg, path, kw):
    """
    Read an C{HttpProtocolOptions} into the L{ClusterInfo} settings C{kw}.

    @param anyMsg: the C{google.protobuf.Any} as configured.
    @param path: its field path (C{...typed_extension_protocol_options[key]}).
    """
    msg = unpackAny(anyMsg, path)
    kw["httpProtocolOptions"] = msg
    _check(msg, "", path)

    common = msg.common_http_protocol_options
    cpath = path + ".common_http_protocol_options"
    _check(common, "common_http_protocol_options", cpath)
    if common.HasField("max_headers_count"):
        kw["upstreamMaxHeadersCount"] = common.max_headers_count.value
    if common.HasField("max_response_headers_kb"):
        value = common.max_response_headers_kb.value
        if not 0 < value <= 8192:
            raise ConfigError(
                "%s.max_response_headers_kb: value must be inside range (0, 8192] "
                "(HttpProtocolOptionsValidationError.MaxResponseHeadersKb)" % (cpath,))
        kw["upstreamMaxResponseHeadersKb"] = value
    if common.HasField("max_requests_per_connection"):
        kw["maxRequestsPerConnection"] = common.max_requests_per_connection.value
    if common.HasField("idle_timeout"):
        kw["upstreamIdleTimeout"] = durationSeconds(common.idle_timeout)
    if common.HasField("max_connection_duration"):
        kw["upstreamMaxConnectionDuration"] = durationSeconds(common.max_connection_duration)
    if common.HasField("max_stream_duration"):
        kw["upstreamMaxStreamDuration"] = durationSeconds(common.max_stream_duration)

    upstream = msg.upstream_http_protocol_options
    upath = path + ".upstream_http_protocol_options"
    _check(upstream, "upstream_http_protocol_options", upath)
    if upstream.auto_sni or upstream.auto_san_validation:
        kw["upstreamHttpOptions"] = UpstreamHttpOptions(
            upstream.auto_sni, upstream.auto_san_validation,
            upstream.override_auto_sni_header.lower().encode("latin-1"))

    explicit = msg.explicit_http_config
    epath = path + ".explicit_http_config"
    _check(explicit, "explicit_http_config", epath)
    http1 = explicit.http_protocol_options
    _check(http1, "explicit_http_config.http_protocol_options",
           epath + ".http_protocol_options")
    if http1.enable_trailers:
        kw["upstreamEnableTrailers"] = True
    if explicit.HasField("http2_protocol_options"):
        kw["upstreamHttp2Options"] = http2OptionsFromProto(
            explicit.http2_protocol_options, epath + ".http2_protocol_options", upstream=True)

    if msg.HasField("use_downstream_protocol_config"):
        downstream = msg.use_downstream_protocol_config
        dpath = path + ".use_downstream_protocol_config"
        _check(downstream, "use_downstream_protocol_config", dpath)
        _check(downstream.http_protocol_options,
               "use_downstream_protocol_config.http_protocol_options",
               dpath + ".http_protocol_options")
        if downstream.http_protocol_options.enable_trailers:
            kw["upstreamEnableTrailers"] = True
        kw["upstreamUseDownstreamProtocol"] = True
        kw["upstreamHttp2Options"] = http2OptionsFromProto(
            downstream.http2_protocol_options, dpath + ".http2_protocol_options",
            upstream=True)

    if msg.HasField("auto_config"):
        auto = msg.auto_config
        apath = path + ".auto_config"
        _check(auto, "auto_config", apath)
        _check(auto.http_protocol_options, "auto_config.http_protocol_options",
               apath + ".http_protocol_options")
        if auto.http_protocol_options.enable_trailers:
            kw["upstreamEnableTrailers"] = True
        kw["upstreamAutoConfig"] = apath
        kw["upstreamHttp2Options"] = http2OptionsFromProto(
            auto.http2_protocol_options, apath + ".http2_protocol_options", upstream=True)
