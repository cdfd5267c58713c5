"""
Cluster types (Envoy's C{envoy.clusters} extensions), each registered by
the name Envoy gives it (C{envoy.cluster.static}, ...); the cluster manager
finds the one a cluster's C{type} names.
"""
