# -*- test-case-name: tests.upstream.test_host_set_mirror -*-
"""
Host sets across processes. With C{--worker-processes}, the main process
owns DNS and active health checks as Envoy's main thread does: an upstream
sees one process's checks, whatever the number of workers. Each new host
set with its health (what the main thread posts to its worker threads)
goes to every worker process over its channel
(L{txenvoy.server.worker_processes}), and a worker process installs it in
its own clusters, which neither resolve nor check.

Only clusters whose membership is the main thread's take part
(L{txenvoy.upstream.cluster.PrimaryCluster.sharedMembership}): not
C{ORIGINAL_DST}, whose hosts each worker makes, nor aggregate clusters.
Outlier detection stays in each worker process, fed by its own responses.
"""

import json

from txenvoy.network.pipe import PipeAddress
from txenvoy.network.user_space import InternalAddress
from txenvoy.upstream.host import Host, Locality


def _encodeAddress(address):
    """A host's C{(host, port)} as JSON: a pipe and an internal address by their parts."""
    host, port = address
    if isinstance(host, PipeAddress):
        return [{"pipe": [host.path, host.mode]}, port]
    if isinstance(host, InternalAddress):
        return [{"internal": [host.listenerName, host.endpointId]}, port]
    return [host, port]


def _decodeAddress(value):
    host, port = value
    if isinstance(host, dict):
        if "pipe" in host:
            host = PipeAddress(*host["pipe"])
        else:
            host = InternalAddress(*host["internal"])
    return host, port


def describeHost(host):
    """
    A L{Host} as the JSON-able dict a worker process rebuilds it from:
    everything it was made with, and its current health flags.
    """
    return {
        "address": _encodeAddress(host.address), "hostname": host.hostname,
        "weight": host.weight, "filter_metadata": host.filterMetadata,
        "priority": host.priority,
        "locality": [host.locality.region, host.locality.zone, host.locality.subZone],
        "eds_health_status": host.edsHealthStatus(),
        "health_check": [host.healthCheckPort, host.healthCheckHostname,
                         host.disableActiveHealthCheck],
        "hash_key": host.hashKey, "canary": host.canary,
        "metadata": {k: [v, None if e is None else list(e)]
                     for k, v, e in ((k, v[0], v[1]) for k, v in host.metadata.items())},
        "flags": sorted(host.healthFlagSet()),
    }


def _identity(description):
    """What makes two descriptions the same host (everything but its health)."""
    return json.dumps({k: v for k, v in description.items() if k != "flags"},
                      sort_keys=True)


def hostFromDescription(clusterName, d):
    """A new L{Host} of C{clusterName} from L{describeHost}'s dict."""
    hcPort, hcHostname, hcDisabled = d["health_check"]
    return Host(
        _decodeAddress(d["address"]), hostname=d["hostname"], weight=d["weight"],
        priority=d["priority"], locality=Locality(*d["locality"]),
        clusterName=clusterName, healthFlags=d["flags"],
        edsHealthStatus=d["eds_health_status"], healthCheckPort=hcPort,
        healthCheckHostname=hcHostname, disableActiveHealthCheck=hcDisabled,
        hashKey=d["hash_key"], canary=d["canary"],
        metadata={k: (v, None if e is None else tuple(e))
                  for k, (v, e) in d["metadata"].items()},
        filterMetadata=d.get("filter_metadata"))


def applyHostSet(cluster, descriptions):
    """
    Install the main process's host set in a worker process's C{cluster}:
    hosts it already has are kept (with their per-worker stats) and take
    the new health flags; new ones are made; the rest leave.

    @return: whether the membership changed (not only health).
    """
    name = cluster.info.name
    kept = {}
    for host in cluster.hosts:
        kept.setdefault(_identity(describeHost(host)), []).append(host)
    hosts = []
    changed = False
    for d in descriptions:
        same = kept.get(_identity(d))
        if same:
            host = same.pop(0)
            host.replaceHealthFlags(d["flags"])
        else:
            host = hostFromDescription(name, d)
            changed = True
        hosts.append(host)
    changed = changed or any(kept.values())
    cluster.mirrorHosts(hosts, changed)
    return changed


class _ClusterRelay:
    """
    Stands where a worker thread's cluster would on one cluster of the
    main process: each membership posted to it goes to the worker
    processes.
    """

    def __init__(self, relay, name):
        self.relay = relay
        self.name = name
        self.dispatcher = relay.dispatcher

    def updateHosts(self, hosts):
        self.relay.publish(self.name, [describeHost(h) for h in hosts])


class HostSetRelay:
    """
    The main process's side: every shared cluster's host sets, sent on as
    they change and kept for worker processes that start later.

    @ivar current: C{{cluster name: [description]}}, the last of each.
    """

    def __init__(self, clusterManager, dispatcher, send):
        """
        @param clusterManager: the main process's cluster manager, initialized.
        @param dispatcher: the main dispatcher (memberships are posted to it).
        @param send: called with each C{{"host_set": ...}} message.
        """
        self.dispatcher = dispatcher
        self.current = {}
        self._send = send
        self._relays = {}
        self._clusterManager = clusterManager
        for name, cluster in clusterManager.clusters.items():
            self._follow(name, cluster)
        clusterManager.activationListeners.append(self._follow)

    def _follow(self, name, cluster):
        """
        Follow C{cluster}, now the active one of C{name} (CDS added or
        replaced it), instead of the one before; C{None}: CDS removed it.
        """
        old = self._relays.pop(name, None)
        if old is not None:
            old[0]._unregister(old[1])
        if cluster is None:
            self.current.pop(name, None)
            return
        if cluster.sharedMembership:
            relay = _ClusterRelay(self, name)
            self._relays[name] = (cluster, relay)
            cluster._register(relay)

    def publish(self, name, descriptions):
        self.current[name] = descriptions
        self._send({"host_set": {"cluster": name, "hosts": descriptions}})

    def close(self):
        """Stop following the clusters."""
        for cluster, relay in self._relays.values():
            cluster._unregister(relay)
        self._relays = {}
        if self._follow in self._clusterManager.activationListeners:
            self._clusterManager.activationListeners.remove(self._follow)
