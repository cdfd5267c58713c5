"""
The seams between the connection manager, its codecs, its filter chain, the
router and the pools are declared interfaces (L{txenvoy.interfaces}): live
objects provide them, so neither side reaches into the other's private
attributes and a second protocol plugs in behind the same seams.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.http.hcm_harness import Harness
from tests.http.test_conn_manager import GET, RecordingFactory
from txenvoy.http.conn_pool import poolsFor
from txenvoy.http.http1.client_codec import ClientCodec
from txenvoy.http.http1.server_codec import ServerCodec
from txenvoy.interfaces import (
    IClientConnectionCodec,
    IFilterManagerStream,
    IHttpConnPool,
    IRequestDecoder,
    IResponseDecoder,
    IResponseEncoder,
    IRouterFilterCallbacks,
    IServerCodec,
    IServerConnectionCallbacks,
)


class _Owner:
    """The server codec's callbacks: records the encoder it is handed."""

    def __init__(self):
        self.encoders = []

    def newStream(self, encoder):
        self.encoders.append(encoder)
        return self

    def decodeHeaders(self, headers, endStream):
        pass

    def decodeData(self, data, endStream):
        pass

    def decodeTrailers(self, trailers):
        pass

    def onCodecError(self, status, details):
        pass


class _Decoder:
    def onResponseHeaders(self, headers, endStream):
        pass

    def onResponseData(self, data, endStream):
        pass

    def onResponseTrailers(self, trailers):
        pass

    def onResponseComplete(self):
        pass

    def onProtocolError(self, details):
        pass


class CodecSeamTests(SynchronousTestCase):

    def test_serverCodec(self):
        """The HTTP/1.1 server codec and its per-request encoder."""
        owner = _Owner()
        codec = ServerCodec(owner, StringTransport(), clock=Clock())
        self.assertTrue(verifyObject(IServerCodec, codec))
        self.assertEqual(codec.protocol, "HTTP/1.1")
        codec.dataReceived(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        self.assertTrue(verifyObject(IResponseEncoder, owner.encoders[0]))

    def test_clientCodec(self):
        """The HTTP/1.1 client codec."""
        self.assertTrue(verifyObject(IClientConnectionCodec, ClientCodec(_Decoder(), StringTransport())))


class ConnectionManagerSeamTests(SynchronousTestCase):

    def test_streamAndCallbacks(self):
        """
        The connection manager is its codec's callbacks, each stream is the
        codec's decoder and its filter chain's stream, and each filter's
        callbacks serve the router too.
        """
        log = []
        factory = RecordingFactory("a", log)
        h = Harness(self)
        h.config.filterFactories = (("f0", factory),) + tuple(h.config.filterFactories)
        h.connect().send(GET)
        callbacks = factory.filters[0].callbacks
        self.assertTrue(verifyObject(IRouterFilterCallbacks, callbacks))
        stream = callbacks.stream
        self.assertTrue(verifyObject(IFilterManagerStream, stream))
        self.assertTrue(verifyObject(IRequestDecoder, stream))
        self.assertTrue(verifyObject(IServerConnectionCallbacks, stream.cm))
        self.assertTrue(verifyObject(IServerCodec, stream.cm.codec))
        self.assertTrue(verifyObject(IResponseEncoder, stream.encoder))

    def test_poolAndUpstreamRequest(self):
        """The pool the router asks, and where the pool's client delivers."""
        h = Harness(self)
        h.connect().send(b"GET /o/x HTTP/1.1\r\nhost: a\r\n\r\n")
        h.upstream()
        cluster = h.dispatcher.clusterManager.getThreadLocalCluster("origin")
        pools = poolsFor(cluster)
        pool = pools.poolFor(cluster.chooseHost())
        self.assertTrue(verifyObject(IHttpConnPool, pool))
        [client] = pool.busy
        self.assertTrue(verifyObject(IResponseDecoder, client.stream))
