# -*- test-case-name: tests.upstream.test_locality -*-
"""
Locality-weighted load balancing (C{common_lb_config.
locality_weighted_lb_config}), as Envoy's C{HostSetImpl::chooseHealthyLocality}
does it: within the priority level chosen, a locality is picked first, in
proportion to its effective weight, then a host of it by the cluster's
policy.

A locality's effective weight is its C{load_balancing_weight} times its
availability: the share of its (non-excluded) hosts that are eligible
(healthy, or degraded for the degraded source), times the
overprovisioning factor, capped at 1. A locality with no weight (none
configured) or no eligible host gets nothing. When no locality can be
picked, Envoy falls back to the level's eligible hosts as a whole.

Localities are ordered as Envoy orders them (region, zone, sub-zone), so
that the interleaving of picks is Envoy's too.
"""

import heapq


def localityKey(locality):
    """The sort and lookup key of a L{txenvoy.upstream.host.Locality}."""
    return (locality.region, locality.zone, locality.subZone)


def effectiveWeights(levelHosts, eligible, weights, overprovisioningFactor):
    """
    Envoy's C{HostSetImpl::effectiveLocalityWeight}, for every locality of
    one level.

    @param levelHosts: the level's hosts, excluded ones left out.
    @param eligible: the hosts that may be picked (healthy or degraded).
    @param weights: C{{localityKey: load_balancing_weight}} of this level.
    @return: C{[(localityKey, effectiveWeight, [eligible hosts])]}, in
        Envoy's locality order, localities with weight 0 left out.
    """
    totals = {}
    for h in levelHosts:
        key = localityKey(h.locality)
        totals[key] = totals.get(key, 0) + 1
    members = {}
    for h in eligible:
        members.setdefault(localityKey(h.locality), []).append(h)
    factor = overprovisioningFactor / 100.0
    out = []
    for key in sorted(totals):
        hosts = members.get(key, [])
        weight = weights.get(key, 0)
        if not hosts or not weight:
            continue
        availability = min(1.0, factor * len(hosts) / totals[key])
        out.append((key, weight * availability, hosts))
    return out


class _LocalityScheduler:
    """Earliest deadline first over localities (Envoy's C{EdfScheduler})."""

    __slots__ = ("_heap",)

    def __init__(self, entries):
        # (deadline, order, weight, picker)
        self._heap = [(1.0 / w, i, w, picker) for i, (w, picker) in enumerate(entries)]
        heapq.heapify(self._heap)

    def pick(self):
        deadline, order, weight, picker = self._heap[0]
        heapq.heapreplace(self._heap, (deadline + 1.0 / weight, order, weight, picker))
        return picker


def localityWeightedPicker(levelHosts, eligible, weights, overprovisioningFactor, makePicker):
    """
    A picker over one level's eligible hosts that picks a locality first.

    @param makePicker: builds the cluster policy's picker over a list of
        hosts (one per locality, so each keeps its own rotation, as Envoy's
        per-locality schedulers do).
    @return: a function of no arguments returning a host.
    """
    entries = effectiveWeights(levelHosts, eligible, weights, overprovisioningFactor)
    if not entries:
        return makePicker(eligible)
    if len(entries) == 1:
        return makePicker(entries[0][2])
    scheduler = _LocalityScheduler([(w, makePicker(hosts)) for _, w, hosts in entries])

    def pick():
        return scheduler.pick()()

    return pick
