# -*- test-case-name: tests.testing.test_dispatcher -*-
"""
Cluster configs for tests, built from the same proto3-JSON fields a
bootstrap's C{clusters} entry has.
"""

from google.protobuf import json_format

from envoy.config.cluster.v3 import cluster_pb2

__all__ = ["clusterProto", "endpoint"]


def endpoint(ip, port, weight=None, healthStatus=None, hostname=None):
    """One C{lb_endpoints} entry as a dict."""
    e = {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port}}}}
    if hostname:
        e["endpoint"]["hostname"] = hostname
    if weight is not None:
        e["load_balancing_weight"] = weight
    if healthStatus is not None:
        e["health_status"] = healthStatus
    return e


def clusterProto(name="c1", endpoints=(), priorityGroups=None, **fields):
    """
    A C{Cluster} message built from proto3-JSON-style fields.

    @param endpoints: C{lb_endpoints} dicts (see L{endpoint}) for one
        locality at priority 0.
    @param priorityGroups: or C{[(priority, [lb_endpoints])]}.
    @param fields: any other C{Cluster} field, e.g. C{connect_timeout="1s"}.
    """
    d = {"name": name}
    groups = priorityGroups
    if groups is None:
        groups = [(0, list(endpoints))] if endpoints else []
    if groups or "load_assignment" not in fields:
        d["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [
                dict({"lb_endpoints": eps}, **({"priority": p} if p else {}))
                for p, eps in groups
            ],
        }
    d.update(fields)
    return json_format.ParseDict(d, cluster_pb2.Cluster())
