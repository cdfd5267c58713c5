"""
Fuzz target: the PROXY protocol listener filter
(L{txenvoy.extensions.filters.listener.proxy_protocol}).

The input's first bytes choose the filter's config (versions allowed,
connections without a header allowed, TLV rules and pass-through, a TLS
inspector after it, as in Envoy's front proxy examples) and where the rest
is cut into reads; the rest is what the client sends first. A real
listener connection (L{txenvoy.network.connection.ServerConnection}) runs
the listener filters over the bytes as they arrive, then the connection is
lost.

Accepted: the network filter chain starts and receives exactly the bytes
after the header (all of them when there was none); the restored
addresses are C{(host, port)} pairs. A proper rejection is the connection
reset, with nothing built and the rejection counted
(C{downstream_cx_proxy_proto_error} or
C{proxy_proto.not_found_disallowed} / C{...disallowed}). Waiting is
proper only while fewer bytes than the longest header have arrived.
Anything else is a crash: an exception out of C{dataReceived}, bytes lost
or invented, a close nobody counted.
"""

from tests.extensions.filters.listener.fakes import Harness, RecorderFactory, singleChain
from tests.fuzz.support import FuzzInput, check
from txenvoy.extensions.filters.listener.proxy_protocol import (
    FILTER_STATE_KEY,
    MAX_V1_LEN,
    V2_HEADER_LEN,
    ProxyProtocolConfig,
)
from txenvoy.extensions.filters.listener.tls_inspector import TlsInspectorConfig

_REJECTIONS = ("downstream_cx_proxy_proto_error", "proxy_proto.not_found_disallowed",
               "proxy_proto.versions.v1.disallowed", "proxy_proto.versions.v2.disallowed")


def _config(flags):
    allowV1 = not flags & 2
    allowV2 = not flags & 4 or not allowV1
    rules = {0x02: ("ns", "authority"), 0xE0: ("", "custom")} if flags & 8 else None
    return ProxyProtocolConfig(
        allowRequestsWithoutProxyProtocol=bool(flags & 1), allowV1=allowV1, allowV2=allowV2,
        rules=rules, passThroughAll=bool(flags & 0x10),
        passThroughTypes=(0x01, 0x05) if flags & 0x40 else ())


def _isAddress(address):
    return (isinstance(address, tuple) and len(address) == 2
            and isinstance(address[0], str) and isinstance(address[1], int))


# One worker and listener per config, kept: building them is most of the
# cost of an input.
_listeners = {}


def _listener(flags):
    built = _listeners.get(flags)
    if built is None:
        harness = Harness()
        recorder = RecorderFactory()
        listener = singleChain(recorder)
        listener.listenerFilters = [_config(flags)]
        if flags & 0x20:
            listener.listenerFilters.append(TlsInspectorConfig())
        built = _listeners[flags] = (harness, recorder, listener)
    return built


def testOneInput(data):
    """Send C{data} to a listener whose first listener filter is proxy_protocol."""
    inp = FuzzInput(data)
    flags = inp.byte()
    harness, recorder, listener = _listener(flags)
    del recorder.built[:]
    before = sum(harness.counter(name) for name in _REJECTIONS)
    conn, transport = harness.connect(listener)
    sent = []
    for piece in inp.pieces():
        if transport.disconnecting or transport.disconnected:
            break
        sent.append(piece)
        conn.dataReceived(piece)
    sent = b"".join(sent)
    closed = transport.disconnecting or transport.disconnected
    rejections = sum(harness.counter(name) for name in _REJECTIONS) - before
    if recorder.built:
        check(len(recorder.built) == 1, "%d network filters built", len(recorder.built))
        received = recorder.built[0].received()
        check(sent.endswith(received), "the chain received %r of %r", received, sent)
        consumed = len(sent) - len(received)
        kept = conn.streamInfo.filterState.get(FILTER_STATE_KEY)
        check(consumed == 0 or kept is not None,
              "%d bytes consumed with no header kept", consumed)
        check(_isAddress(conn.remoteAddress) and _isAddress(conn.localAddress),
              "addresses %r %r", conn.remoteAddress, conn.localAddress)
        check(rejections == 0, "accepted, yet %d rejections counted", rejections)
    elif closed:
        check(rejections >= 1, "closed with no rejection counted")
    else:
        check(len(sent) < max(MAX_V1_LEN, V2_HEADER_LEN + 0xFFFF) or flags & 0x20,
              "still waiting after %d bytes", len(sent))
    conn.connectionLost(None)
