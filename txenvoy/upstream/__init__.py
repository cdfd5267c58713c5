"""
Upstreams: clusters, hosts, load balancing and upstream connections
(Envoy's C{source/common/upstream}).

The main thread's L{txenvoy.upstream.cluster_manager.ClusterManager} owns
membership; each worker holds a
L{txenvoy.upstream.cluster_manager.ThreadLocalClusterManager} that picks
hosts and opens L{txenvoy.upstream.connection.UpstreamConnection}s on the
worker's reactor.
"""
