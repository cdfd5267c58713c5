# -*- test-case-name: tests.testing -*-
"""
Test your own txenvoy extensions the way txenvoy tests its own: with
Twisted's fakes (a C{Clock}, a C{MemoryReactorClock}, C{StringTransport}s),
no sockets, no threads, no global reactor, deterministic time.

 - L{HttpProxyHarness}: a whole HTTP connection manager in memory (your
   HTTP filters, the router, routes, clusters and pools): send a request,
   get the response and what reached the upstream.
 - L{compileHttpFilter} / L{makeHttpFilter} / L{FakeStreamFilterCallbacks}:
   one HTTP filter, driven call by call, with recording callbacks.
 - L{NetworkFilterHarness}: one network filter on fake connections.
 - L{FakeDispatcher}, L{clusterProto}, L{endpoint}, L{runtimeWith}: the
   pieces these are built from, for tests of other extensions.

txenvoy's own test suite is written with this package.
"""

from txenvoy.testing.cluster import clusterProto, endpoint
from txenvoy.testing.dispatcher import FakeDispatcher, QueueDispatcher
from txenvoy.testing.http_filter import (
    FakeDownstreamConnection,
    FakeServer,
    FakeSsl,
    FakeStreamFilterCallbacks,
    LocalReply,
    compileHttpFilter,
    makeFactoryContext,
    makeHttpFilter,
    requestHeaders,
    responseHeaders,
    runtimeWith,
)
from txenvoy.testing.network_filter import (
    FakeNetworkConnection,
    NetworkFilterHarness,
    RecordingProtocol,
)
from txenvoy.testing.proxy import Exchange, HttpProxyHarness, Response, UpstreamRequest

__all__ = [
    "Exchange",
    "FakeDispatcher",
    "FakeDownstreamConnection",
    "FakeNetworkConnection",
    "FakeServer",
    "FakeSsl",
    "FakeStreamFilterCallbacks",
    "HttpProxyHarness",
    "LocalReply",
    "NetworkFilterHarness",
    "QueueDispatcher",
    "RecordingProtocol",
    "Response",
    "UpstreamRequest",
    "clusterProto",
    "compileHttpFilter",
    "endpoint",
    "makeFactoryContext",
    "makeHttpFilter",
    "requestHeaders",
    "responseHeaders",
    "runtimeWith",
]
