"""
Tests for L{txenvoy.extensions.filters.network.tcp_proxy} on a fake clock,
fake transports and a fake cluster.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.upstream.host import HostStats
from txenvoy.extensions.filters.network.tcp_proxy import TcpProxyConfig
from txenvoy.network.stream_info import StreamInfo
from txenvoy.server.dispatcher import Dispatcher
from txenvoy.stats.store import StatsStore
from txenvoy.router.config import HashPolicy
from txenvoy.upstream.cluster import CircuitBreakers, ClusterInfo, Thresholds
from txenvoy.upstream.hashing import xxHash64
from txenvoy.upstream.load_balancer import LbConfig
from txenvoy.upstream.ring_hash_lb import RingHashConfig
from txenvoy.upstream.thread_aware_lb import TableCache


class HalfCloseTransport(StringTransport):
    """A StringTransport that can send a FIN."""
    writeClosed = False

    def loseWriteConnection(self):
        self.writeClosed = True


class FakeHost:
    def __init__(self, name):
        self.addressString = name
        self.stats = HostStats()

    def statsFor(self, workerName):
        return self.stats


class FakeUpstream:
    def __init__(self, host, callbacks):
        self.host = host
        self.hostStats = host.statsFor("worker_0")
        self.callbacks = callbacks
        self.transport = StringTransport()
        self.written = []
        self.writeClosed = False
        self.closed = self.aborted = False
        self.closedLocally = None
        self.producer = None

    def localAddress(self):
        address = self.transport.getHost()
        return (address.host, address.port)

    def write(self, data):
        self.written.append(data)

    def writeSequence(self, seq):
        self.written.extend(seq)

    def loseWriteConnection(self):
        self.writeClosed = True

    def close(self, local=None):
        self.closed = True
        self.closedLocally = local

    def abort(self):
        self.aborted = True

    def registerProducer(self, producer, streaming):
        self.producer = producer


class FakeStats:
    def __init__(self, shard):
        for name in ("upstream_cx_none_healthy", "upstream_cx_connect_attempts_exceeded",
                     "upstream_cx_overflow"):
            setattr(self, name, shard.counter("cluster.c." + name))
        self.upstream_rq_total = shard.counter("cluster.c.upstream_rq_total")
        self.upstream_rq_active = shard.gauge("cluster.c.upstream_rq_active")


class FakeCluster:
    def __init__(self, shard, hosts, info=None):
        self.hosts = list(hosts)
        self.info = info or ClusterInfo(name="c")
        self.stats = FakeStats(shard)
        self.upstreams = []

    def chooseHost(self, context):
        return self.hosts.pop(0) if self.hosts else None

    def connect(self, host, callbacks):
        upstream = FakeUpstream(host, callbacks)
        self.upstreams.append(upstream)
        return upstream


class FakeClusterManager:
    def __init__(self, clusters):
        self.clusters = clusters

    def getThreadLocalCluster(self, name):
        return self.clusters.get(name)


class FakeConnection:
    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.streamInfo = StreamInfo(dispatcher.reactor)


class RecordingLogger:
    def __init__(self):
        self.infos = []

    def log(self, info, req, resp):
        self.infos.append(info)


class TcpProxyTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.store = StatsStore()
        self.dispatcher = Dispatcher(self.clock, "worker_0", self.store.shard("worker_0"))
        self.logger = RecordingLogger()

    def start(self, hosts=("h1",), attempts=1, idle=3600.0, clusterName="c", info=None):
        cluster = FakeCluster(self.dispatcher.stats, [FakeHost(h) for h in hosts], info)
        self.dispatcher.clusterManager = FakeClusterManager({"c": cluster})
        config = TcpProxyConfig("p", [(clusterName, 1)], idle, attempts, [self.logger])
        proxy = config.buildFilter(FakeConnection(self.dispatcher), None)
        transport = HalfCloseTransport()
        proxy.makeConnection(transport)
        return cluster, proxy, transport

    def counter(self, name):
        return self.store.counterValue(name)

    def test_bytesBothWays(self):
        cluster, proxy, transport = self.start()
        self.assertEqual(transport.producerState, "paused")
        upstream = cluster.upstreams[0]
        proxy.dataReceived(b"early")
        proxy.onUpstreamConnected(upstream)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(upstream.written, [b"early"])
        proxy.dataReceived(b"more")
        self.assertEqual(upstream.written, [b"early", b"more"])
        proxy.onUpstreamData(b"reply")
        self.assertEqual(transport.value(), b"reply")
        self.assertIs(transport.producer, upstream.transport)
        self.assertEqual(self.counter("tcp.p.downstream_cx_rx_bytes_total"), 9)
        self.assertEqual(self.counter("tcp.p.downstream_cx_tx_bytes_total"), 5)

    def test_sessionCountedAsRequest(self):
        """
        Envoy's TCP pool attaches a stream to the upstream connection: the
        host's C{rq_total}/C{rq_active} and the cluster's
        C{upstream_rq_total}/C{upstream_rq_active} count the session.
        """
        cluster, proxy, transport = self.start()
        upstream = cluster.upstreams[0]
        proxy.onUpstreamConnected(upstream)
        hostStats = upstream.host.stats
        self.assertEqual((hostStats.rq_total, hostStats.rq_active), (1, 1))
        self.assertEqual(self.counter("cluster.c.upstream_rq_total"), 1)
        self.assertEqual(self.store.gaugeValue("cluster.c.upstream_rq_active"), 1)
        proxy.connectionLost(None)
        proxy.onUpstreamClosed(None)
        self.assertEqual((hostStats.rq_total, hostStats.rq_active), (1, 0))
        self.assertEqual(self.store.gaugeValue("cluster.c.upstream_rq_active"), 0)

    def test_halfCloseBothWays(self):
        """A FIN each way is passed on; both done closes the downstream."""
        cluster, proxy, transport = self.start()
        upstream = cluster.upstreams[0]
        proxy.onUpstreamConnected(upstream)
        proxy.readConnectionLost()
        self.assertTrue(upstream.writeClosed)
        self.assertFalse(transport.disconnecting)
        proxy.onUpstreamReadClosed()
        self.assertTrue(transport.disconnecting)

    def test_upstreamFinLastIsRemote(self):
        """
        Envoy: the client's FIN went upstream, the host's FIN ends the
        session: C{upstream_cx_destroy_remote}.
        """
        cluster, proxy, transport = self.start()
        upstream = cluster.upstreams[0]
        proxy.onUpstreamConnected(upstream)
        proxy.readConnectionLost()
        proxy.onUpstreamReadClosed()
        proxy.connectionLost(None)
        self.assertIs(upstream.closedLocally, False)

    def test_downstreamFinLastIsLocal(self):
        """
        Envoy: the host's FIN came first, the client's FIN goes upstream
        and ends the session: C{upstream_cx_destroy_local}.
        """
        cluster, proxy, transport = self.start()
        upstream = cluster.upstreams[0]
        proxy.onUpstreamConnected(upstream)
        proxy.onUpstreamReadClosed()
        self.assertTrue(transport.writeClosed)
        self.assertFalse(transport.disconnecting)
        proxy.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        proxy.connectionLost(None)
        self.assertIs(upstream.closedLocally, True)

    def test_spliceFinOrder(self):
        """The splice pump's FINs decide the same way."""
        for first, closedLocally in ((True, False), (False, True)):
            cluster, proxy, transport = self.start()
            upstream = cluster.upstreams[0]
            proxy.onUpstreamConnected(upstream)
            proxy.onSpliceReadClosed(first)
            self.assertFalse(transport.disconnecting)
            proxy.onSpliceReadClosed(not first)
            self.assertTrue(transport.disconnecting)
            proxy.connectionLost(None)
            self.assertIs(upstream.closedLocally, closedLocally)

    def test_finBeforeConnectIsPassedOnConnect(self):
        cluster, proxy, transport = self.start()
        proxy.readConnectionLost()
        upstream = cluster.upstreams[0]
        proxy.onUpstreamConnected(upstream)
        self.assertTrue(upstream.writeClosed)

    def test_unknownCluster(self):
        """Envoy: tcp_proxy to an undefined cluster closes and counts no_route."""
        _, proxy, transport = self.start(clusterName="nosuch")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counter("tcp.p.downstream_cx_no_route"), 1)

    def test_noHealthyHost(self):
        cluster, proxy, transport = self.start(hosts=())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counter("cluster.c.upstream_cx_none_healthy"), 1)

    def test_maxConnectAttempts(self):
        """Each failed connect tries another host until max_connect_attempts."""
        cluster, proxy, transport = self.start(hosts=("h1", "h2", "h3"), attempts=2)
        proxy.onUpstreamConnectFailed(cluster.upstreams[0], "remote connection failure")
        self.assertEqual(len(cluster.upstreams), 2)
        self.assertFalse(transport.disconnecting)
        proxy.onUpstreamConnectFailed(cluster.upstreams[1], "remote connection failure")
        self.assertEqual(len(cluster.upstreams), 2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counter("cluster.c.upstream_cx_connect_attempts_exceeded"), 1)
        proxy.connectionLost(None)
        self.assertEqual(self.logger.infos[0].responseFlags(), "UF")
        self.assertEqual(self.logger.infos[0].upstreamHost, "h2")

    def test_idleTimeout(self):
        """
        No bytes for idle_timeout: closed and counted. As Envoy's timer,
        reset by each read or write, it strikes idle_timeout after the
        last activity.
        """
        cluster, proxy, transport = self.start(idle=10.0)
        proxy.onUpstreamConnected(cluster.upstreams[0])
        self.clock.advance(6)
        proxy.dataReceived(b"x")
        self.clock.advance(6)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(3.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counter("tcp.p.idle_timeout"), 1)

    def test_downstreamCloseClosesUpstream(self):
        cluster, proxy, transport = self.start()
        upstream = cluster.upstreams[0]
        proxy.onUpstreamConnected(upstream)
        proxy.connectionLost(None)
        self.assertTrue(upstream.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.logger.infos), 1)

    def test_downstreamCloseWhileConnectingAborts(self):
        cluster, proxy, transport = self.start()
        proxy.connectionLost(None)
        self.assertTrue(cluster.upstreams[0].aborted)

    def test_maxConnections(self):
        """
        Envoy 1.40: past the cluster's max_connections tcp_proxy counts
        C{upstream_cx_overflow} and closes the new downstream connection
        without connecting (flag UO); a closed upstream frees its slot.
        """
        info = ClusterInfo(name="c", circuitBreakers=CircuitBreakers(
            Thresholds("DEFAULT", maxConnections=1)))
        slots = info.resourceManagers["DEFAULT"].connections
        cluster, first, _ = self.start(info=info)
        first.onUpstreamConnected(cluster.upstreams[0])
        self.assertEqual(slots.current, 1)
        other, second, transport = self.start(info=info)
        self.assertEqual(other.upstreams, [])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.counter("cluster.c.upstream_cx_overflow"), 1)
        second.connectionLost(None)
        self.assertEqual(self.logger.infos[0].responseFlags(), "UO")
        first.onUpstreamClosed(None)
        first.connectionLost(None)
        self.assertEqual(slots.current, 0)
        again, _, transport = self.start(info=info)
        self.assertEqual(len(again.upstreams), 1)
        self.assertFalse(transport.disconnecting)

    def test_connectFailureFreesSlot(self):
        info = ClusterInfo(name="c")
        cluster, proxy, _ = self.start(hosts=("h1", "h2"), attempts=2, info=info)
        proxy.onUpstreamConnectFailed(cluster.upstreams[0], "remote connection failure")
        self.assertEqual(info.resourceManagers["DEFAULT"].connections.current, 1)
        proxy.connectionLost(None)
        self.assertEqual(info.resourceManagers["DEFAULT"].connections.current, 0)

    def test_weightedClusters(self):
        values = iter([0.1, 0.9])
        config = TcpProxyConfig("p", [("a", 80), ("b", 20)], 0, 1, [], rng=lambda: next(values))
        self.assertEqual([config.pickCluster(), config.pickCluster()], ["a", "b"])


class RecordingCluster(FakeCluster):
    """Records the hash each pick's load balancer context carries."""

    def chooseHost(self, context):
        self.hashes = getattr(self, "hashes", []) + [context.computeHashKey()]
        return FakeCluster.chooseHost(self, context)


class HashPolicyTests(SynchronousTestCase):
    """tcp_proxy's C{hash_policy}, as Envoy's C{Network::HashPolicyImpl}."""

    def pick(self, policies, hashing=True):
        clock = Clock()
        store = StatsStore()
        dispatcher = Dispatcher(clock, "worker_0", store.shard("worker_0"))
        lbConfig = LbConfig()
        if hashing:
            lbConfig.hashing = TableCache(RingHashConfig())
        cluster = RecordingCluster(dispatcher.stats, [FakeHost("h1")],
                                   ClusterInfo(name="c", lbConfig=lbConfig))
        dispatcher.clusterManager = FakeClusterManager({"c": cluster})
        config = TcpProxyConfig("p", [("c", 1)], 0, 1, [])
        config.hashPolicies = policies
        connection = FakeConnection(dispatcher)
        connection.streamInfo.downstreamRemoteAddress = ("10.0.0.9", 1234)
        connection.streamInfo.filterState["k"] = "v"
        config.buildFilter(connection, None).makeConnection(HalfCloseTransport())
        return cluster.hashes

    def test_sourceIp(self):
        """The client's IP address text (no port) is hashed."""
        self.assertEqual(self.pick((HashPolicy("source_ip"),)), [xxHash64(b"10.0.0.9")])

    def test_filterState(self):
        self.assertEqual(self.pick((HashPolicy("filter_state", "k"),)), [xxHash64(b"v")])

    def test_noPolicy(self):
        """No policy, or a cluster that does not hash: no hash (a random pick)."""
        self.assertEqual(self.pick(()), [None])
        self.assertEqual(self.pick((HashPolicy("source_ip"),), hashing=False), [None])
