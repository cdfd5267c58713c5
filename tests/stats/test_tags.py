"""
Tests for L{txenvoy.stats.tags}.

Every expected result below was read from Envoy 1.40's C{/stats} and
C{/stats/prometheus} for the same stat (same tags, same tag order).
"""

from twisted.trial.unittest import SynchronousTestCase

from envoy.config.metrics.v3 import stats_pb2

from txenvoy.config.errors import ConfigError
from txenvoy.stats.tags import TagNames, TagProducer, defaultTagProducer, regexPrefix

# (stat name, tag-extracted name, tags) as Envoy 1.40 produced them.
ENVOY_CASES = [
    ("cluster.c1.upstream_rq_200", "cluster.upstream_rq",
     [("envoy.response_code", "200"), ("envoy.cluster_name", "c1")]),
    ("cluster.c1.upstream_rq_total", "cluster.upstream_rq_total",
     [("envoy.cluster_name", "c1")]),
    ("cluster.c1.upstream_rq_2xx", "cluster.upstream_rq_xx",
     [("envoy.response_code_class", "2"), ("envoy.cluster_name", "c1")]),
    ("cluster.c1.external.upstream_rq_503", "cluster.external.upstream_rq",
     [("envoy.response_code", "503"), ("envoy.cluster_name", "c1")]),
    ("http.ingress_http.downstream_rq_2xx", "http.downstream_rq_xx",
     [("envoy.response_code_class", "2"), ("envoy.http_conn_manager_prefix", "ingress_http")]),
    ("http.admin.downstream_cx_total", "http.downstream_cx_total",
     [("envoy.http_conn_manager_prefix", "admin")]),
    ("listener.127.0.0.1_10098.http.ingress_http.downstream_rq_2xx",
     "listener.http.downstream_rq_xx",
     [("envoy.response_code_class", "2"), ("envoy.http_conn_manager_prefix", "ingress_http"),
      ("envoy.listener_address", "127.0.0.1_10098")]),
    ("listener.admin.http.admin.downstream_rq_completed",
     "listener.admin.http.downstream_rq_completed",
     [("envoy.http_conn_manager_prefix", "admin")]),
    ("listener.127.0.0.1_10610.downstream_cx_total", "listener.downstream_cx_total",
     [("envoy.listener_address", "127.0.0.1_10610")]),
    ("listener.admin.downstream_cx_total", "listener.admin.downstream_cx_total", []),
    ("listener.admin.main_thread.downstream_cx_total",
     "listener.admin.main_thread.downstream_cx_total", []),
    ("listener.127.0.0.1_10098.worker_0.downstream_cx_total", "listener.worker.downstream_cx_total",
     [("envoy.worker_id", "0"), ("envoy.listener_address", "127.0.0.1_10098")]),
    ("server.worker_0.watchdog_miss", "server.worker.watchdog_miss", [("envoy.worker_id", "0")]),
    ("server.main_thread.watchdog_miss", "server.main_thread.watchdog_miss", []),
    ("thread_local_cluster_manager.worker_1.clusters_inflated",
     "thread_local_cluster_manager.worker.clusters_inflated", [("envoy.worker_id", "1")]),
    ("tcp.tcp_stats.downstream_cx_total", "tcp.downstream_cx_total",
     [("envoy.tcp_prefix", "tcp_stats")]),
    ("server.live", "server.live", []),
    ("listener.127.0.0.1_10026.ssl.ciphers.TLS_AES_256_GCM_SHA384", "listener.ssl.ciphers",
     [("envoy.ssl_cipher", "TLS_AES_256_GCM_SHA384"),
      ("envoy.listener_address", "127.0.0.1_10026")]),
    ("cluster.tls_upstream.ssl.ciphers.ECDHE-RSA-AES256-GCM-SHA384", "cluster.ssl.ciphers",
     [("cipher_suite", "ECDHE-RSA-AES256-GCM-SHA384"), ("envoy.cluster_name", "tls_upstream")]),
    ("listener.127.0.0.1_10026.ssl.curves.X25519", "listener.ssl.curves",
     [("envoy.ssl_curve", "X25519"), ("envoy.listener_address", "127.0.0.1_10026")]),
    ("cluster.tls_upstream.ssl.sigalgs.rsa_pss_rsae_sha256", "cluster.ssl.sigalgs",
     [("envoy.ssl_sigalg", "rsa_pss_rsae_sha256"), ("envoy.cluster_name", "tls_upstream")]),
    ("listener.127.0.0.1_10026.ssl.versions.TLSv1.3", "listener.ssl.versions",
     [("envoy.ssl_version", "TLSv1.3"), ("envoy.listener_address", "127.0.0.1_10026")]),
    ("cluster.tls_upstream.ssl.certificate.unnamed_cert_e3b0c442.expiration_unix_time_seconds",
     "cluster.ssl.certificate.expiration_unix_time_seconds",
     [("envoy.tls_certificate", "unnamed_cert_e3b0c442"),
      ("envoy.cluster_name", "tls_upstream")]),
    ("connection_limit.echo_limit.limited_connections", "connection_limit.limited_connections",
     [("envoy.connection_limit_prefix", "echo_limit")]),
    ("local_rate_limit.tcp_rl.rate_limited", "local_rate_limit.rate_limited",
     [("envoy.local_network_ratelimit_prefix", "tcp_rl")]),
    ("http_local_rate_limiter.http_local_rate_limit.enabled", "http_local_rate_limit.enabled",
     [("envoy.local_http_ratelimit_prefix", "http_local_rate_limiter")]),
    ("tcp_rbac.rbac.allowed", "rbac.allowed", [("envoy.rbac_prefix", "tcp_rbac")]),
    ("http.ingress_http.rbac.allowed", "http.rbac.allowed",
     [("envoy.http_conn_manager_prefix", "ingress_http")]),
    ("cluster.my-svc.membership_healthy", "cluster.membership_healthy",
     [("envoy.cluster_name", "my-svc")]),
]


class DefaultTagsTests(SynchronousTestCase):

    def test_envoyCases(self):
        """
        Envoy 1.40's default extractors: names, tag values and tag order as
        its /stats/prometheus shows them.
        """
        producer = TagProducer()
        for name, tagged, tags in ENVOY_CASES:
            self.assertEqual(producer.produceTags(name), (tagged, tuple(tags)), name)

    def test_ipv6ListenerAddress(self):
        producer = TagProducer()
        self.assertEqual(
            producer.produceTags("listener.[__1]_10000.downstream_cx_total"),
            ("listener.downstream_cx_total", (("envoy.listener_address", "[__1]_10000"),)))

    def test_cached(self):
        """The second lookup of a name runs no regex: the same object comes back."""
        producer = TagProducer()
        first = producer.produceTags("cluster.c1.upstream_rq_200")
        self.assertIs(producer.produceTags("cluster.c1.upstream_rq_200"), first)

    def test_sharedDefault(self):
        self.assertIs(defaultTagProducer(), defaultTagProducer())

    def test_regexPrefix(self):
        """As Envoy's extractRegexPrefix: a literal first token followed by a dot."""
        self.assertEqual(regexPrefix(r"^cluster\.((.+?)\.)"), "cluster")
        self.assertEqual(regexPrefix(r"^http(?=\.).*?\.x"), "http")
        self.assertEqual(regexPrefix(r"_rq(_(\d{3}))$"), "")
        self.assertEqual(regexPrefix(r"^(?:listener|cluster)\..*"), "")


class StatsConfigTests(SynchronousTestCase):

    def test_fixedValue(self):
        """A stats_tags fixed_value is on every stat, first."""
        config = stats_pb2.StatsConfig()
        t = config.stats_tags.add()
        t.tag_name = "txenvoy_tier"
        t.fixed_value = "edge"
        producer = TagProducer.fromStatsConfig(config)
        self.assertEqual(producer.produceTags("cluster.c1.upstream_rq_total"),
                         ("cluster.upstream_rq_total",
                          (("txenvoy_tier", "edge"), ("envoy.cluster_name", "c1"))))

    def test_customRegex(self):
        config = stats_pb2.StatsConfig()
        t = config.stats_tags.add()
        t.tag_name = "shard"
        t.regex = r"^mycache\.((.*?)\.)"
        producer = TagProducer.fromStatsConfig(config)
        self.assertEqual(producer.produceTags("mycache.s1.hits"),
                         ("mycache.hits", (("shard", "s1"),)))

    def test_noDefaults(self):
        config = stats_pb2.StatsConfig()
        config.use_all_default_tags.value = False
        producer = TagProducer.fromStatsConfig(config)
        self.assertEqual(producer.produceTags("cluster.c1.upstream_rq_200"),
                         ("cluster.c1.upstream_rq_200", ()))

    def test_defaultRegexByName(self):
        """With defaults off, naming a default tag without a regex uses Envoy's regex."""
        config = stats_pb2.StatsConfig()
        config.use_all_default_tags.value = False
        config.stats_tags.add().tag_name = TagNames.CLUSTER_NAME
        producer = TagProducer.fromStatsConfig(config)
        self.assertEqual(producer.produceTags("cluster.c1.upstream_rq_200"),
                         ("cluster.upstream_rq_200", (("envoy.cluster_name", "c1"),)))

    def test_errors(self):
        config = stats_pb2.StatsConfig()
        config.stats_tags.add(tag_name="envoy.cluster_name", regex="x(y)")
        e = self.assertRaises(ConfigError, TagProducer.fromStatsConfig, config)
        self.assertIn("specified twice", str(e))
        config = stats_pb2.StatsConfig()
        config.stats_tags.add(tag_name="bad", regex="(")
        self.assertRaises(ConfigError, TagProducer.fromStatsConfig, config)
        config = stats_pb2.StatsConfig()
        config.stats_tags.add(tag_name="nodefault")
        e = self.assertRaises(ConfigError, TagProducer.fromStatsConfig, config)
        self.assertIn("no default regex", str(e))
