# -*- test-case-name: tests.upstream.test_subset_lb -*-
"""
Subset load balancing (C{lb_subset_config}, Envoy's
C{SubsetLoadBalancer}): a cluster's hosts are grouped into subsets by the
values of the C{envoy.lb} metadata keys each C{subset_selectors} entry
names, and a request whose route carries C{metadata_match} is balanced
over the subset with exactly those keys and values, by the cluster's
policy (priorities, health, panic and all, within the subset).

When no subset matches (or the request has no criteria), a selector with
exactly the request's keys may say what to do (C{fallback_policy}:
C{NO_FALLBACK}, C{ANY_ENDPOINT}, C{DEFAULT_SUBSET}, C{KEYS_SUBSET} to
retry with fewer keys), else the cluster's C{fallback_policy} does:
nothing, any host, or the hosts matching C{default_subset}; with
C{panic_mode_any}, any host when the fallback has none to offer.

One L{SubsetLoadBalancer} lives on each worker and rebuilds its subsets
from each host snapshot the main thread posts.
"""

import json
from itertools import product

from zope.interface import implementer

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.interfaces import ILoadBalancer
from txenvoy.upstream.load_balancer import LbConfig
from txenvoy.upstream.locality import localityKey
from txenvoy.upstream.metadata_match import (
    FALLBACK_LIST_KEY,
    mergeCriteria,
    structCriteria,
)
from txenvoy.upstream.thread_aware_lb import newLoadBalancer

NOT_DEFINED = "NOT_DEFINED"
NO_FALLBACK = "NO_FALLBACK"
ANY_ENDPOINT = "ANY_ENDPOINT"
DEFAULT_SUBSET = "DEFAULT_SUBSET"
KEYS_SUBSET = "KEYS_SUBSET"

_CLUSTER_FALLBACKS = {0: NO_FALLBACK, 1: ANY_ENDPOINT, 2: DEFAULT_SUBSET}
_SELECTOR_FALLBACKS = {0: NOT_DEFINED, 1: NO_FALLBACK, 2: ANY_ENDPOINT, 3: DEFAULT_SUBSET,
                       4: KEYS_SUBSET}
_SUBSET_FIELDS = ("fallback_policy", "default_subset", "subset_selectors",
                  "locality_weight_aware", "scale_locality_weight", "panic_mode_any",
                  "list_as_any", "metadata_fallback_policy")
_SELECTOR_FIELDS = ("keys", "single_host_per_subset", "fallback_policy", "fallback_keys_subset")


class SubsetSelector:
    """One compiled C{subset_selectors} entry."""

    __slots__ = ("keys", "singleHost", "fallbackPolicy", "fallbackKeys")

    def __init__(self, keys, singleHost=False, fallbackPolicy=NOT_DEFINED, fallbackKeys=()):
        #: The metadata keys, sorted (Envoy sorts them too).
        self.keys = tuple(sorted(set(keys)))
        self.singleHost = singleHost
        self.fallbackPolicy = fallbackPolicy
        self.fallbackKeys = frozenset(fallbackKeys)


class SubsetConfig:
    """
    The compiled C{lb_subset_config}.

    @ivar fallbackPolicy: C{NO_FALLBACK}, C{ANY_ENDPOINT} or
        C{DEFAULT_SUBSET}.
    @ivar defaultSubset: the criteria of C{default_subset}.
    @ivar selectors: the L{SubsetSelector}s.
    """

    __slots__ = ("fallbackPolicy", "defaultSubset", "selectors", "localityWeightAware",
                 "scaleLocalityWeight", "panicModeAny", "listAsAny", "fallbackList")

    def __init__(self, fallbackPolicy=NO_FALLBACK, defaultSubset=(), selectors=(),
                 localityWeightAware=False, scaleLocalityWeight=False, panicModeAny=False,
                 listAsAny=False, fallbackList=False):
        self.fallbackPolicy = fallbackPolicy
        self.defaultSubset = defaultSubset
        self.selectors = tuple(selectors)
        self.localityWeightAware = localityWeightAware
        self.scaleLocalityWeight = scaleLocalityWeight
        self.panicModeAny = panicModeAny
        self.listAsAny = listAsAny
        self.fallbackList = fallbackList


def compileSubsetConfig(proto, path):
    """
    C{lb_subset_config} of a C{Cluster} message, checked as Envoy's
    C{SubsetSelectorImpl} checks it.

    @return: a L{SubsetConfig}, or C{None} when the cluster has none.
    """
    if not proto.HasField("lb_subset_config"):
        return None
    spath = path + ".lb_subset_config"
    msg = proto.lb_subset_config
    checkFields(msg, _SUBSET_FIELDS, spath)
    selectors = []
    for i, sel in enumerate(msg.subset_selectors):
        selPath = "%s.subset_selectors[%d]" % (spath, i)
        checkFields(sel, _SELECTOR_FIELDS, selPath)
        policy = _SELECTOR_FALLBACKS[sel.fallback_policy]
        if policy == KEYS_SUBSET:
            keysPath = selPath + ".fallback_keys_subset"
            if not sel.fallback_keys_subset:
                raise ConfigError("%s: fallback_keys_subset cannot be empty" % (keysPath,))
            if not set(sel.fallback_keys_subset) <= set(sel.keys):
                raise ConfigError("%s: fallback_keys_subset must be a subset of selector keys"
                                  % (keysPath,))
            if set(sel.fallback_keys_subset) == set(sel.keys):
                raise ConfigError("%s: fallback_keys_subset cannot be equal to keys"
                                  % (keysPath,))
        selectors.append(SubsetSelector(sel.keys, sel.single_host_per_subset, policy,
                                        sel.fallback_keys_subset))
    return SubsetConfig(
        fallbackPolicy=_CLUSTER_FALLBACKS[msg.fallback_policy],
        defaultSubset=structCriteria(msg.default_subset),
        selectors=selectors,
        localityWeightAware=msg.locality_weight_aware,
        scaleLocalityWeight=msg.scale_locality_weight,
        panicModeAny=msg.panic_mode_any,
        listAsAny=msg.list_as_any,
        fallbackList=msg.metadata_fallback_policy == 1)


def _hostMatches(host, criteria, listAsAny):
    values = host.metadata
    for key, value in criteria:
        have = values.get(key)
        if have is None:
            return False
        if have[0] != value and not (listAsAny and have[1] is not None and value in have[1]):
            return False
    return True


def _subsetKeys(host, keys, listAsAny):
    """Every subset key (criteria) C{host} belongs to for one selector."""
    values = host.metadata
    choices = []
    for key in keys:
        have = values.get(key)
        if have is None:
            return ()
        if listAsAny and have[1] is not None:
            choices.append([(key, v) for v in have[1]])
        else:
            choices.append([(key, have[0])])
    return [tuple(combo) for combo in product(*choices)]


def _copyConfig(base, localityWeights):
    config = LbConfig()
    for name in LbConfig.__slots__:
        setattr(config, name, getattr(base, name))
    config.localityWeights = localityWeights
    return config


@implementer(ILoadBalancer)
class SubsetLoadBalancer:
    """
    One worker's subset load balancer for one cluster.

    @ivar subsets: C{{criteria: LoadBalancer}} of the subsets that have
        hosts.
    """

    def __init__(self, config, lbConfig, workerName, stats, rng=None):
        """
        @param config: the L{SubsetConfig}.
        @param lbConfig: the cluster's L{LbConfig} (each subset's policy).
        @param stats: the worker's L{txenvoy.upstream.cluster.ClusterStats}.
        """
        self.config = config
        self._lbConfig = lbConfig
        self._workerName = workerName
        self._stats = stats
        self._rng = rng
        self._bySelectorKeys = {}
        for sel in config.selectors:
            self._bySelectorKeys.setdefault(sel.keys, sel)
        self.subsets = {}
        self._any = self._default = self._fallback = self._panic = None
        self._duplicates = 0
        self.setHosts(())

    def _newLb(self, hosts, allHosts):
        base = self._lbConfig
        weights = base.localityWeights
        if weights is not None and not self.config.localityWeightAware:
            weights = None
        elif weights is not None and self.config.scaleLocalityWeight:
            weights = _scaledWeights(weights, hosts, allHosts)
        config = base if weights is base.localityWeights else _copyConfig(base, weights)
        lb = newLoadBalancer(config, self._workerName, self._stats.lb_healthy_panic, self._rng)
        lb.setHosts(hosts)
        return lb

    def setHosts(self, hosts):
        """Rebuild every subset from a new snapshot (this worker's thread)."""
        cfg = self.config
        members = {}
        duplicates = 0
        for sel in cfg.selectors:
            for h in hosts:
                for key in _subsetKeys(h, sel.keys, cfg.listAsAny):
                    group = members.setdefault(key, [])
                    if sel.singleHost and group:
                        duplicates += 1
                        continue
                    if h not in group:
                        group.append(h)
        stats = self._stats
        old = self.subsets
        subsets = {}
        for key, group in members.items():
            if key not in old:
                stats.lb_subsets_created.inc()
                stats.lb_subsets_active.inc()
            subsets[key] = self._newLb(group, hosts)
        for key in old:
            if key not in subsets:
                stats.lb_subsets_removed.inc()
                stats.lb_subsets_active.dec()
        self.subsets = subsets
        stats.gauge("lb_subsets_single_host_per_subset_duplicate").set(duplicates)
        hosts = list(hosts)
        policies = {cfg.fallbackPolicy} | {s.fallbackPolicy for s in cfg.selectors}
        self._any = self._newLb(hosts, hosts) if (
            ANY_ENDPOINT in policies or cfg.panicModeAny) else None
        self._default = None
        if DEFAULT_SUBSET in policies:
            self._default = self._newLb(
                [h for h in hosts if _hostMatches(h, cfg.defaultSubset, cfg.listAsAny)], hosts)
        self._fallback = {ANY_ENDPOINT: self._any, DEFAULT_SUBSET: self._default}.get(
            cfg.fallbackPolicy)
        self._panic = self._any if cfg.panicModeAny else None

    def chooseHost(self, context=None):
        """
        @return: a host of the subset the context's C{metadataMatch}
            names, or of the fallback; C{None} when there is none.
        """
        criteria = getattr(context, "metadataMatch", None)
        if self.config.fallbackList and criteria:
            listed = dict(criteria).get(FALLBACK_LIST_KEY)
            if listed is not None:
                rest = tuple(kv for kv in criteria if kv[0] != FALLBACK_LIST_KEY)
                for item in json.loads(listed):
                    if not isinstance(item, dict):
                        continue
                    merged = mergeCriteria(rest, tuple(sorted(
                        (k, json.dumps(v, sort_keys=True, separators=(",", ":")))
                        for k, v in item.items())))
                    host = self._chooseIteration(merged, context)
                    if host is not None:
                        return host
                return None
        return self._chooseIteration(criteria, context)

    def _chooseIteration(self, criteria, context):
        stats = self._stats
        if criteria:
            lb = self.subsets.get(criteria)
            if lb is not None:
                stats.lb_subsets_selected.inc()
                return lb.chooseHost(context)
            sel = self._bySelectorKeys.get(tuple(k for k, _ in criteria))
            if sel is not None and sel.fallbackPolicy != NOT_DEFINED:
                return self._selectorFallback(sel, criteria, context)
        fallback = self._fallback
        if fallback is None:
            return None
        host = fallback.chooseHost(context)
        if host is not None:
            stats.lb_subsets_fallback.inc()
            return host
        if self._panic is not None:
            host = self._panic.chooseHost(context)
            if host is not None:
                stats.lb_subsets_fallback_panic.inc()
                return host
        return None

    def _selectorFallback(self, sel, criteria, context):
        policy = sel.fallbackPolicy
        if policy == ANY_ENDPOINT:
            return self._any.chooseHost(context)
        if policy == DEFAULT_SUBSET:
            return self._default.chooseHost(context)
        if policy == KEYS_SUBSET:
            fewer = tuple(kv for kv in criteria if kv[0] in sel.fallbackKeys)
            return self._chooseIteration(fewer, context)
        return None


def _scaledWeights(weights, hosts, allHosts):
    """
    C{scale_locality_weight}: each locality's weight times the share of
    its hosts that are in the subset.
    """
    def counts(hs):
        out = {}
        for h in hs:
            k = (h.priority, localityKey(h.locality))
            out[k] = out.get(k, 0) + 1
        return out

    inSubset, total = counts(hosts), counts(allHosts)
    scaled = {}
    for priority, byLocality in weights.items():
        scaled[priority] = {
            key: weight * inSubset.get((priority, key), 0) / total[(priority, key)]
            for key, weight in byLocality.items() if total.get((priority, key))}
    return scaled
