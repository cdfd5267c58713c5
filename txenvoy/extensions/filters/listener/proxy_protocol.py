# -*- test-case-name: tests.extensions.filters.listener.test_proxy_protocol -*-
"""
C{envoy.filters.listener.proxy_protocol}: reads the HAProxy PROXY protocol
header (v1 text or v2 binary) in front of a connection, consumes it, and
makes the addresses it carries the connection's remote and local address.

The decisions copy Envoy 1.40 (C{proxy_protocol.cc}, and the real binary
where they differ in detail):

 - fewer than 16 bytes and no CRLF yet: wait; 16 bytes that start with
   neither signature: not PROXY protocol;
 - a v1 line is whatever ends at the first CRLF, at most 107 bytes, split
   on single spaces (two spaces between C{PROXY} and C{TCP4} are an error); C{UNKNOWN} keeps the
   real addresses;
 - v2 C{LOCAL} keeps the real addresses; C{PROXY} needs AF_INET or
   AF_INET6 over STREAM or DGRAM; TLVs must be well formed;
 - restored addresses must be unicast and of the announced family.
"""

import ipaddress
import re
import struct

import attr
from zope.interface import implementer

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import IListenerFilter, IListenerFilterFactory
from txenvoy.stats.per_worker import perWorkerMethod

V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER_LEN = 16
#: The longest v1 line, CRLF included (the PROXY protocol spec).
MAX_V1_LEN = 107
#: A v2 header with the largest address block (AF_UNIX) and no TLVs.
MAX_V2_LEN = V2_HEADER_LEN + 216

_V2_LOCAL, _V2_PROXY = 0, 1
_AF_INET, _AF_INET6 = 1, 2
_STREAM, _DGRAM = 1, 2
_ADDRESS_LENGTH = {_AF_INET: 12, _AF_INET6: 36}

#: The filter state key Envoy stores the PROXY protocol data under.
FILTER_STATE_KEY = "envoy.network.proxy_protocol_options"
#: The dynamic metadata namespace TLV rules write to by default.
METADATA_NAMESPACE = "envoy.filters.listener.proxy_protocol"

_PORT = re.compile(r"\+?[0-9]+\Z")


class Decision:
    """What L{ProxyProtocolParser.parse} decided."""

    MORE = "more"
    DONE = "done"
    ERROR = "error"
    DENIED = "denied"


@attr.s(frozen=True, slots=True)
class ProxyProtocolHeader:
    """
    One parsed PROXY protocol header.

    @ivar version: 1 or 2.
    @ivar length: the whole header's length in bytes (TLVs included).
    @ivar local: C{True} for v1 C{UNKNOWN} and v2 C{LOCAL}: the real
        connection's addresses stand.
    @ivar remoteAddress: C{(host, port)} of the original client, or C{None}.
    @ivar localAddress: C{(host, port)} the client connected to, or C{None}.
    @ivar tlvs: C{((type, value), ...)} of a v2 header.
    """

    version = attr.ib()
    length = attr.ib()
    local = attr.ib(default=True)
    remoteAddress = attr.ib(default=None)
    localAddress = attr.ib(default=None)
    tlvs = attr.ib(default=())


@attr.s(frozen=True, slots=True)
class ProxyProtocolData:
    """
    What the filter leaves in the connection's filter state under
    L{FILTER_STATE_KEY} (Envoy's C{Network::ProxyProtocolData}).

    @ivar sourceAddress: C{(host, port)}.
    @ivar destinationAddress: C{(host, port)}.
    @ivar tlvs: the pass-through TLVs, C{((type, value), ...)}.
    """

    sourceAddress = attr.ib()
    destinationAddress = attr.ib()
    tlvs = attr.ib(default=())


def _isUnicast(address):
    if address.is_unspecified or address.is_multicast:
        return False
    return not (address.version == 4 and address == ipaddress.IPv4Address("255.255.255.255"))


def _parsePort(text):
    if not _PORT.match(text):
        return None
    port = int(text)
    return port if port <= 0xFFFF else None


def _parseAddress(text, version):
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address if address.version == version else None


def parseV1(line):
    """
    Parse one v1 line (CRLF included).

    @return: a L{ProxyProtocolHeader}, or C{None} if it is malformed.
    """
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = text.rstrip(" \t\f\v\r\n").split(" ")
    if len(parts) < 2 or parts[0] != "PROXY":
        return None
    if parts[1] == "UNKNOWN":
        return ProxyProtocolHeader(version=1, length=len(line))
    if len(parts) != 6:
        return None
    family = {"TCP4": 4, "TCP6": 6}.get(parts[1])
    if family is None:
        return None
    src, dst = _parseAddress(parts[2], family), _parseAddress(parts[3], family)
    sport, dport = _parsePort(parts[4]), _parsePort(parts[5])
    if src is None or dst is None or sport is None or dport is None:
        return None
    return ProxyProtocolHeader(version=1, length=len(line), local=False,
                               remoteAddress=(str(src), sport), localAddress=(str(dst), dport))


def parseTlvs(data):
    """
    Split a v2 TLV block into C{((type, value), ...)}.

    @return: the TLVs, or C{None} if one runs past the end.
    """
    out = []
    i, n = 0, len(data)
    while i < n:
        if i + 3 > n:
            return None
        tlvType, length = data[i], struct.unpack("!H", data[i + 1:i + 3])[0]
        i += 3
        if i + length > n:
            return None
        out.append((tlvType, data[i:i + length]))
        i += length
    return tuple(out)


def _parseV2Addresses(data, family):
    if family == _AF_INET:
        src, dst, sport, dport = struct.unpack("!4s4sHH", data[16:28])
        make = ipaddress.IPv4Address
    else:
        src, dst, sport, dport = struct.unpack("!16s16sHH", data[16:52])
        make = ipaddress.IPv6Address
    return (str(make(src)), sport), (str(make(dst)), dport)


class ProxyProtocolParser:
    """
    Reads a PROXY protocol header from the bytes read so far, the way
    Envoy's filter does, resuming its search for the v1 CRLF across calls.

    @ivar version: 1 or 2 once recognised, else C{None} (not found so far).
    @ivar header: the L{ProxyProtocolHeader} once L{Decision.DONE}, or
        C{None} when the connection carries no header and that is allowed.
    """

    def __init__(self, allowV1=True, allowV2=True, allowWithout=False):
        self.allowV1 = allowV1
        self.allowV2 = allowV2
        self.allowWithout = allowWithout
        self.version = None
        self.header = None
        self._searchIndex = 1

    def parse(self, data):
        """
        @param data: every byte read so far (nothing consumed yet).
        @return: a L{Decision}.
        """
        n = len(data)
        if self.allowWithout and self.version is None:
            k = min(n, len(V2_SIGNATURE))
            v2 = self.allowV2 and data[:k] == V2_SIGNATURE[:k]
            k = min(n, len(V1_SIGNATURE))
            v1 = self.allowV1 and data[:k] == V1_SIGNATURE[:k]
            if not (v1 or v2):
                return Decision.DONE
        if n >= V2_HEADER_LEN and self.version is None:
            if data[:len(V2_SIGNATURE)] == V2_SIGNATURE:
                self.version = 2
            elif data[:len(V1_SIGNATURE)] != V1_SIGNATURE:
                return Decision.ERROR
        if self.version == 2:
            return self._parseV2(data)
        return self._parseV1(data)

    def _parseV1(self, data):
        n = len(data)
        i = self._searchIndex
        while i < n:
            if data[i] == 0x0A and data[i - 1] == 0x0D:
                if i == 1:
                    # Could still be the v2 signature: wait for 16 bytes.
                    break
                self.version = 1
                i += 1
                break
            i += 1
        self._searchIndex = i
        if i > MAX_V1_LEN:
            return Decision.ERROR
        if self.version != 1:
            return Decision.MORE
        if not self.allowV1:
            return Decision.DENIED
        header = parseV1(data[:i])
        if header is None:
            return Decision.ERROR
        self.header = header
        return Decision.DONE

    def _parseV2(self, data):
        if not self.allowV2:
            return Decision.DENIED
        verCmd, famTransport = data[12], data[13]
        if verCmd >> 4 != 2:
            return Decision.ERROR
        command, family, transport = verCmd & 0x0F, famTransport >> 4, famTransport & 0x0F
        if command == _V2_LOCAL:
            addressLength = 0
        else:
            addressLength = _ADDRESS_LENGTH.get(family)
            if addressLength is None:
                return Decision.ERROR
        blockLength = struct.unpack("!H", data[14:16])[0]
        if blockLength < addressLength:
            return Decision.ERROR
        whole = V2_HEADER_LEN + blockLength
        if len(data) < whole:
            return Decision.MORE
        if command == _V2_LOCAL:
            self.header = ProxyProtocolHeader(version=2, length=whole)
            return Decision.DONE
        if command != _V2_PROXY or transport not in (_STREAM, _DGRAM):
            return Decision.ERROR
        tlvs = parseTlvs(data[V2_HEADER_LEN + addressLength:whole])
        if tlvs is None:
            return Decision.ERROR
        remote, local = _parseV2Addresses(data, family)
        self.header = ProxyProtocolHeader(version=2, length=whole, local=False,
                                          remoteAddress=remote, localAddress=local, tlvs=tlvs)
        return Decision.DONE

    def expectedLength(self, data):
        """How many bytes the header needs, as far as known (for peeking)."""
        if self.version == 2 and len(data) >= V2_HEADER_LEN:
            return max(MAX_V2_LEN, V2_HEADER_LEN + struct.unpack("!H", data[14:16])[0])
        return MAX_V2_LEN


class _VersionStats:
    def __init__(self, scope):
        self.found = scope.counter("found")
        self.disallowed = scope.counter("disallowed")
        self.error = scope.counter("error")


class ProxyProtocolStats:
    """
    The stats of one filter config on one worker: the legacy
    C{downstream_cx_proxy_proto_error}, and
    C{proxy_proto.[<stat_prefix>.]{not_found_allowed,not_found_disallowed}}
    and C{...versions.v{1,2}.{found,disallowed,error}}.
    """

    def __init__(self, shard, statPrefix):
        prefix = "proxy_proto." + (statPrefix + "." if statPrefix else "")
        scope = shard.scope(prefix)
        self.downstream_cx_proxy_proto_error = shard.counter("downstream_cx_proxy_proto_error")
        self.not_found_allowed = scope.counter("not_found_allowed")
        self.not_found_disallowed = scope.counter("not_found_disallowed")
        self.v1 = _VersionStats(scope.scope("versions.v1."))
        self.v2 = _VersionStats(scope.scope("versions.v2."))


@implementer(IListenerFilter)
class ProxyProtocolFilter:
    """The PROXY protocol listener filter for one accepted socket."""

    def __init__(self, config, connection):
        self._config = config
        self._connection = connection
        self._stats = config.statsFor(connection.dispatcher)
        self._parser = ProxyProtocolParser(config.allowV1, config.allowV2,
                                           config.allowRequestsWithoutProxyProtocol)
        self._callbacks = None
        self.maxReadBytes = MAX_V2_LEN

    def onAccept(self, callbacks):
        self._callbacks = callbacks
        return False

    def onData(self, data):
        parser = self._parser
        decision = parser.parse(data)
        if decision == Decision.MORE:
            self.maxReadBytes = parser.expectedLength(data)
            return False
        stats = self._stats
        versionStats = {1: stats.v1, 2: stats.v2}.get(parser.version)
        if decision == Decision.ERROR:
            if versionStats is None:
                stats.not_found_disallowed.inc()
            else:
                versionStats.error.inc()
            stats.downstream_cx_proxy_proto_error.inc()
            self._callbacks.closeSocket()
            return False
        if decision == Decision.DENIED:
            versionStats.found.inc()
            versionStats.disallowed.inc()
            self._callbacks.closeSocket()
            return False
        header = parser.header
        if header is None:
            stats.not_found_allowed.inc()
            return True
        if not header.local and not self._restoreAddresses(header):
            versionStats.error.inc()
            stats.downstream_cx_proxy_proto_error.inc()
            self._callbacks.closeSocket()
            return False
        versionStats.found.inc()
        self._keep(header)
        self._callbacks.consume(header.length)
        return True

    def _restoreAddresses(self, header):
        remote, local = header.remoteAddress, header.localAddress
        for host, _ in (remote, local):
            if not _isUnicast(ipaddress.ip_address(host)):
                return False
        callbacks = self._callbacks
        if tuple(local) != tuple(self._connection.localAddress):
            callbacks.restoreLocalAddress(local)
        callbacks.restoreRemoteAddress(remote)
        return True

    def _keep(self, header):
        config = self._config
        info = self._connection.streamInfo
        passed = tuple((t, v) for t, v in header.tlvs if config.passThrough(t))
        if header.local:
            data = ProxyProtocolData(self._connection.remoteAddress,
                                     self._connection.localAddress, passed)
        else:
            data = ProxyProtocolData(header.remoteAddress, header.localAddress, passed)
        info.filterState[FILTER_STATE_KEY] = data
        if header.local or not config.rules:
            return
        metadata = getattr(info, "dynamicMetadata", None)
        if metadata is None:
            metadata = info.dynamicMetadata = {}
        for tlvType, value in header.tlvs:
            rule = config.rules.get(tlvType)
            if rule is not None:
                namespace, key = rule
                metadata.setdefault(namespace, {})[key] = value.decode("utf-8", "replace")


@implementer(IListenerFilterFactory)
class ProxyProtocolConfig:
    """
    A compiled C{ProxyProtocol}.

    @ivar rules: C{{tlvType: (metadataNamespace, key)}}.
    @ivar passThroughAll: pass every TLV on in the filter state.
    @ivar passThroughTypes: the TLV types passed on otherwise.
    """

    statsFor = perWorkerMethod(lambda self, d: ProxyProtocolStats(d.stats, self.statPrefix))

    def __init__(self, allowRequestsWithoutProxyProtocol=False, allowV1=True, allowV2=True,
                 statPrefix="", rules=None, passThroughAll=False, passThroughTypes=()):
        self.allowRequestsWithoutProxyProtocol = allowRequestsWithoutProxyProtocol
        self.allowV1 = allowV1
        self.allowV2 = allowV2
        self.statPrefix = statPrefix
        self.rules = dict(rules or {})
        self.passThroughAll = passThroughAll
        self.passThroughTypes = frozenset(passThroughTypes)

    def passThrough(self, tlvType):
        """Whether a TLV of this type is kept in the filter state."""
        return self.passThroughAll or tlvType in self.passThroughTypes

    def buildListenerFilter(self, connection):
        return ProxyProtocolFilter(self, connection)


@extension(Category.LISTENER_FILTER,
           "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
           "envoy.filters.listener.proxy_protocol",
           fields=("rules", "allow_requests_without_proxy_protocol", "pass_through_tlvs",
                   "disallowed_versions", "stat_prefix", "tlv_location"))
def createProxyProtocol(message, context):
    """Build a L{ProxyProtocolConfig} from a C{ProxyProtocol} message."""
    path = context.configPath
    if message.tlv_location != 0:
        raise UnsupportedField(path + ".tlv_location", "only DYNAMIC_METADATA")
    allowV1 = allowV2 = True
    for version in message.disallowed_versions:
        if version == 0:
            allowV1 = False
        else:
            allowV2 = False
    if not (allowV1 or allowV2):
        raise ConfigError("%s: Proxy Protocol filter is misconfigured: all proxy protocol "
                          "versions are disallowed." % (path,))
    rules = {}
    for rule in message.rules:
        kv = rule.on_tlv_present
        rules[rule.tlv_type & 0xFF] = (kv.metadata_namespace or METADATA_NAMESPACE, kv.key)
    passAll, passTypes = False, ()
    if message.HasField("pass_through_tlvs"):
        p = message.pass_through_tlvs
        if p.match_type == 0:
            passAll = True
        else:
            passTypes = [t & 0xFF for t in p.tlv_type]
    return ProxyProtocolConfig(message.allow_requests_without_proxy_protocol, allowV1, allowV2,
                               message.stat_prefix, rules, passAll, passTypes)
