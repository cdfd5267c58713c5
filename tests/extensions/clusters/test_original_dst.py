"""
Tests for L{txenvoy.extensions.clusters.original_dst}: Envoy's
C{ORIGINAL_DST} cluster and its C{CLUSTER_PROVIDED} load balancer.
"""

from google.protobuf import json_format
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from envoy.config.cluster.v3 import cluster_pb2
from tests.upstream.test_fakes import FakeDispatcher, stat
from txenvoy.config.errors import ConfigError
from txenvoy.extensions.clusters.original_dst import OriginalDstCluster
from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.interfaces import ICluster, ILoadBalancer
from txenvoy.stats.store import StatsStore
from txenvoy.upstream.cluster import compileCluster
from txenvoy.upstream.cluster_manager import ClusterManager
from txenvoy.upstream.load_balancer_context import LoadBalancerContext

PATH = "static_resources.clusters[0]"


class MainReactor(Clock):
    """A fake main reactor whose C{callFromThread} runs at the next turn."""

    def callFromThread(self, f, *args):
        self.callLater(0, f, *args)


def originalDstProto(**fields):
    d = {"name": "od", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED"}
    d.update(fields)
    return json_format.ParseDict(d, cluster_pb2.Cluster())


class FakeConnection:
    """What the load balancer reads of a downstream connection."""

    def __init__(self, localAddress, restored):
        self.localAddress = localAddress
        self.localAddressRestored = restored


def headers(**values):
    return RequestHeaders(b"GET", b"/", b"example", headers=HeaderMap(
        [(k.replace("_", "-").encode(), v.encode()) for k, v in values.items()]))


class OriginalDstTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = MainReactor()
        self.store = StatsStore()

    def build(self, **fields):
        cm = ClusterManager(self.reactor, self.store, self.store.shard("main_thread"),
                            [originalDstProto(**fields)])
        cm.initialize()
        self.addCleanup(cm.stop)
        tlc = cm.createThreadLocal(FakeDispatcher(self.reactor, "worker_0", self.store)) \
            .getThreadLocalCluster("od")
        return cm.clusters["od"], tlc

    def test_interfaces(self):
        primary, tlc = self.build()
        self.assertIsInstance(primary, OriginalDstCluster)
        verifyObject(ICluster, primary)
        verifyObject(ILoadBalancer, tlc.loadBalancer)

    def test_restoredLocalAddressOnly(self):
        """
        Envoy's C{OriginalDstCluster::LoadBalancer::chooseHost}: the local
        address counts only when a listener filter restored it.
        """
        _, tlc = self.build()
        self.assertIsNone(tlc.chooseHost(None))
        self.assertIsNone(tlc.chooseHost(LoadBalancerContext(
            FakeConnection(("127.0.0.1", 10014), False))))
        host = tlc.chooseHost(LoadBalancerContext(FakeConnection(("10.1.2.3", 80), True)))
        self.assertEqual(host.addressString, "10.1.2.3:80")
        self.assertEqual(host.hostname, "od10.1.2.3:80")

    def test_hostPostedToMainAndBack(self):
        """
        A worker uses the host it made at once; the main thread adds it to
        the membership (one membership change) and posts it back, and the
        next pick for that address gets the same host.
        """
        primary, tlc = self.build()
        ctx = LoadBalancerContext(FakeConnection(("10.1.2.3", 80), True))
        host = tlc.chooseHost(ctx)
        self.assertIs(tlc.chooseHost(ctx), host)
        self.assertEqual(primary.hosts, ())
        self.reactor.advance(0)
        self.assertEqual(primary.hosts, (host,))
        self.assertEqual(tlc.hosts, (host,))
        self.assertIs(tlc.chooseHost(ctx), host)
        self.assertEqual(stat(self.store, "cluster.od.membership_total"), 1)
        self.assertEqual(stat(self.store, "cluster.od.membership_change"), 1)

    def test_header(self):
        """
        With C{use_http_header}, C{x-envoy-original-dst-host} wins over
        the restored address; an invalid value counts
        C{original_dst_host_invalid} and falls back to it.
        """
        _, tlc = self.build(original_dst_lb_config={"use_http_header": True})
        conn = FakeConnection(("10.1.2.3", 80), True)
        pick = lambda **h: tlc.chooseHost(LoadBalancerContext(conn, headers(**h)))  # noqa
        self.assertEqual(pick(x_envoy_original_dst_host="[::1]:8080").addressString,
                         "[::1]:8080")
        self.assertEqual(pick(x_envoy_original_dst_host="nope:1").addressString,
                         "10.1.2.3:80")
        self.assertEqual(pick().addressString, "10.1.2.3:80")
        self.assertEqual(stat(self.store, "cluster.od.original_dst_host_invalid"), 1)

    def test_headerNameAndPortOverride(self):
        _, tlc = self.build(original_dst_lb_config={
            "use_http_header": True, "http_header_name": "X-Dst",
            "upstream_port_override": 9000})
        host = tlc.chooseHost(LoadBalancerContext(None, headers(x_dst="10.0.0.9:1")))
        self.assertEqual(host.addressString, "10.0.0.9:9000")
        self.assertIsNone(tlc.chooseHost(LoadBalancerContext(
            None, headers(x_envoy_original_dst_host="10.0.0.9:1"))))

    def test_cleanup(self):
        """
        Envoy's C{OriginalDstCluster::cleanup}: each sweep keeps an address
        picked since the previous one, so an unused host goes at the second
        sweep after its last pick; one with an open connection stays.
        """
        primary, tlc = self.build(cleanup_interval="1s")
        a = LoadBalancerContext(FakeConnection(("10.0.0.1", 80), True))
        b = LoadBalancerContext(FakeConnection(("10.0.0.2", 80), True))
        hostA = tlc.chooseHost(a)
        hostB = tlc.chooseHost(b)
        self.reactor.advance(0)
        hostB.statsFor("worker_0").cx_active = 1
        self.reactor.advance(1)
        self.assertEqual(len(primary.hosts), 2)
        self.reactor.advance(1)
        self.assertEqual(primary.hosts, (hostB,))
        self.assertEqual(tlc.hosts, (hostB,))
        hostB.statsFor("worker_0").cx_active = 0
        self.reactor.advance(1)
        self.assertEqual(primary.hosts, ())
        self.assertIsNot(tlc.chooseHost(a), hostA)
        self.assertEqual(stat(self.store, "cluster.od.membership_change"), 4)


class OriginalDstConfigTests(SynchronousTestCase):
    """What Envoy 1.40 --mode validate says, with the field path."""

    def assertError(self, path, message, proto):
        e = self.assertRaises(ConfigError, compileCluster, proto, PATH)
        self.assertEqual(str(e), "%s.%s: %s" % (PATH, path, message))

    def test_lbPolicy(self):
        self.assertError(
            "lb_policy", "cluster: LB policy ROUND_ROBIN is not valid for Cluster type "
            "ORIGINAL_DST. Only 'CLUSTER_PROVIDED' is allowed with cluster type "
            "'ORIGINAL_DST'", originalDstProto(lb_policy="ROUND_ROBIN"))

    def test_loadAssignment(self):
        self.assertError("load_assignment", "ORIGINAL_DST clusters must have no load "
                         "assignment configured",
                         originalDstProto(load_assignment={"cluster_name": "od"}))

    def test_headerNameWithoutUseHttpHeader(self):
        self.assertError(
            "original_dst_lb_config.http_header_name",
            "ORIGINAL_DST cluster: invalid config http_header_name=foo and use_http_header "
            "is false. Set use_http_header to true if http_header_name is desired.",
            originalDstProto(original_dst_lb_config={"http_header_name": "foo"}))

    def test_clusterProvidedElsewhere(self):
        proto = json_format.ParseDict({"name": "s", "lb_policy": "CLUSTER_PROVIDED"},
                                      cluster_pb2.Cluster())
        self.assertError("lb_policy", "cluster manager: cluster provided LB specified but "
                         "cluster 's' did not provide one. Check cluster documentation.", proto)

    def test_ranges(self):
        self.assertError("cleanup_interval", "value must be greater than 0s "
                         "(ClusterValidationError.CleanupInterval)",
                         originalDstProto(cleanup_interval="0s"))
        self.assertError("original_dst_lb_config.upstream_port_override",
                         "value must be less than or equal to 65535",
                         originalDstProto(original_dst_lb_config={
                             "upstream_port_override": 65536}))

    def test_metadataKeyRefused(self):
        e = self.assertRaises(Exception, compileCluster, originalDstProto(
            original_dst_lb_config={"metadata_key": {"key": "k", "path": [{"key": "p"}]}}),
            PATH)
        self.assertIn(PATH + ".original_dst_lb_config.metadata_key", str(e))
