# -*- test-case-name: tests.config.test_checks -*-
"""
Envoy's checks that look across a bootstrap rather than at one field.

These are the errors Envoy raises while it builds the server from a valid
bootstrap (cluster manager, listener manager, route tables), not from the
schema. Running them at load time lets C{--mode validate} and a failed start
report them with Envoy's wording, before anything is bound or connected:

  - C{cluster manager: duplicate cluster 'c1'}
  - C{error adding listener named 'l1': address is necessary}
  - C{error adding listener: 'l2' has duplicate address '127.0.0.1:10040'
    as existing listener, ...}
  - C{error adding listener '127.0.0.1:10040': no filter chains specified},
    and filter chains with the same or overlapping matching rules
  - C{malformed IP address: localhost} where Envoy resolves without DNS
  - C{route: unknown cluster 'nosuch'} for an inline route table
  - C{Didn't find a registered implementation for 'envoy.filters.http.router'
    with type URL: ''}
  - C{type.googleapis.com/envoy.config.cluster.v3.Cluster: node 'id' and
    'cluster' are required. ...}

Each message ends with C{@ <field path>}.
"""

import ipaddress

from txenvoy.config import messages
from txenvoy.config.errors import ConfigError, collectErrors, report
from txenvoy.network.address import addressString

_HCM_TYPE = (
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager")

# Route table parts whose typed_per_filter_config maps filter names to
# configs; an empty config there names no type either.
_PER_FILTER_CONFIG_HOLDERS = frozenset((
    "envoy.config.route.v3.VirtualHost",
    "envoy.config.route.v3.Route",
    "envoy.config.route.v3.WeightedCluster.ClusterWeight",
))

# Extension entries that name an implementation only through typed_config:
# Envoy 1.40 no longer looks extensions up by name.
_EXTENSION_ENTRIES = frozenset((
    "envoy.config.listener.v3.ListenerFilter",
    "envoy.config.listener.v3.Filter",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
    "envoy.config.accesslog.v3.AccessLog",
    "envoy.config.core.v3.TransportSocket",
    "envoy.config.metrics.v3.StatsSink",
    "envoy.config.overload.v3.ResourceMonitor",
)) | _PER_FILTER_CONFIG_HOLDERS

_NODE_REQUIRED = (
    "%s: node 'id' and 'cluster' are required. Set it either in 'node' config "
    "or via --service-node and --service-cluster options.")

_DUPLICATE_ADDRESS = (
    "error adding listener: '%s' has duplicate address '%s' as existing listener, "
    "to check if the listener has duplicated addresses with other listeners or "
    "'enable_reuse_port' is set to 'false' for the listener")

_STATIC_TYPE = 0  # envoy.config.cluster.v3.Cluster.DiscoveryType.STATIC
_EDS_TYPE = 3  # envoy.config.cluster.v3.Cluster.DiscoveryType.EDS
_UDP = 1  # envoy.config.core.v3.SocketAddress.Protocol.UDP
_EDS_TYPE_URL = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def check(bootstrap, serviceNode="", serviceCluster=""):
    """
    Run Envoy's cross-reference checks on a parsed, schema-valid bootstrap;
    every problem is found before any is raised (one
    L{txenvoy.config.errors.ConfigErrors} when there are several).

    @param bootstrap: an C{envoy.config.bootstrap.v3.Bootstrap}.
    @param serviceNode: C{--service-node}, standing in for an empty
        C{node.id}.
    @param serviceCluster: C{--service-cluster}, standing in for an empty
        C{node.cluster}.
    @raise ConfigError: the problems found, the first one first, in the
        order Envoy meets them while starting.
    """
    with collectErrors():
        _check(bootstrap, serviceNode, serviceCluster)


def _check(bootstrap, serviceNode, serviceCluster):
    hasNode = bool((bootstrap.node.id or serviceNode)
                   and (bootstrap.node.cluster or serviceCluster))
    dynamic = bootstrap.dynamic_resources
    static = bootstrap.static_resources

    if bootstrap.HasField("admin"):
        _checkExtensionEntries(bootstrap.admin, "admin")
        if bootstrap.admin.HasField("address"):
            _checkIpAddress(bootstrap.admin.address, "admin.address")
    if not hasNode and bootstrap.HasField("dynamic_resources") and dynamic.HasField("ads_config"):
        report(ConfigError(_NODE_REQUIRED % ("ads",) + " @ dynamic_resources.ads_config"))

    clusterNames = set()
    for i, cluster in enumerate(static.clusters):
        path = "static_resources.clusters[%d]" % (i,)
        _checkExtensionEntries(cluster, path)
        if cluster.name in clusterNames:
            report(messages.duplicateCluster(cluster.name, path))
        clusterNames.add(cluster.name)
        if cluster.WhichOneof("cluster_discovery_type") in (None, "type") \
                and cluster.type == _STATIC_TYPE:
            _checkStaticEndpoints(cluster, path)
        if (not hasNode and cluster.type == _EDS_TYPE
                and cluster.eds_cluster_config.HasField("eds_config")):
            report(ConfigError(
                _NODE_REQUIRED % (_EDS_TYPE_URL,) + " @ %s.eds_cluster_config" % (path,)))

    if not hasNode and bootstrap.HasField("dynamic_resources"):
        # CDS starts before LDS. Envoy's validate mode never starts LDS, but
        # serve mode fails the same way for it, so both are checked.
        for field, typeUrl in (
                ("cds_config", "type.googleapis.com/envoy.config.cluster.v3.Cluster"),
                ("lds_config", "type.googleapis.com/envoy.config.listener.v3.Listener")):
            if dynamic.HasField(field):
                report(ConfigError(_NODE_REQUIRED % (typeUrl,) + " @ dynamic_resources." + field))

    _checkListeners(static.listeners, clusterNames)

    for i, sink in enumerate(bootstrap.stats_sinks):
        _checkExtensionEntries(sink, "stats_sinks[%d]" % (i,))
    if bootstrap.HasField("overload_manager"):
        _checkExtensionEntries(bootstrap.overload_manager, "overload_manager")


def _checkListeners(listeners, clusterNames):
    names = set()
    bound = []
    for i, listener in enumerate(listeners):
        path = "static_resources.listeners[%d]" % (i,)
        if listener.name:
            if listener.name in names:
                # Envoy keeps the first static listener of a name and
                # ignores the others without building them.
                continue
            names.add(listener.name)
        if listener.HasField("internal_listener"):
            if listener.HasField("address"):
                report(messages.internalListenerWithAddress(listener.name, path + ".address"))
        elif not listener.HasField("address") and not listener.HasField("api_listener"):
            report(messages.listenerAddressMissing(listener.name, path))
        if listener.HasField("address"):
            _checkIpAddress(listener.address, path + ".address")
        for j, extra in enumerate(listener.additional_addresses):
            _checkIpAddress(extra.address, "%s.additional_addresses[%d].address" % (path, j))
        _checkFilterChains(listener, path)
        _checkExtensionEntries(listener, path)
        for hcm, hcmPath in _find(listener, path, frozenset((_HCM_TYPE,))):
            _checkRouteConfig(hcm, hcmPath, clusterNames)
        addresses = [listener.address] + [a.address for a in listener.additional_addresses]
        keyed = [_addressKey(a) for a in addresses if a.WhichOneof("address")]
        keys = {key for key, _ in keyed if key is not None}
        for other in bound:
            if keys & other:
                report(ConfigError(
                    _DUPLICATE_ADDRESS % (listener.name, ",".join(text for _, text in keyed))
                    + " @ %s.address" % (path,)))
        bound.append(keys)


def _isIp(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _checkIpAddress(address, path, hint=""):
    """
    Envoy resolves listener, admin and static endpoint addresses without
    DNS: they must be IP literals unless a resolver is named.
    """
    if address.WhichOneof("address") != "socket_address":
        return
    socket = address.socket_address
    if socket.resolver_name or _isIp(socket.address):
        return
    report(messages.malformedIpAddress(socket.address, path + ".socket_address.address", hint))


def _checkStaticEndpoints(cluster, path):
    hint = messages.STATIC_ENDPOINT_HINT
    base = path + ".load_assignment"
    for e, locality in enumerate(cluster.load_assignment.endpoints):
        for h, host in enumerate(locality.lb_endpoints):
            if host.WhichOneof("host_identifier") == "endpoint_name":
                continue
            addressPath = "%s.endpoints[%d].lb_endpoints[%d].endpoint.address" % (base, e, h)
            if not host.endpoint.address.WhichOneof("address"):
                report(ConfigError("Address must be set%s @ %s" % (hint, addressPath)))
            _checkIpAddress(host.endpoint.address, addressPath, hint)


def _listenerText(listener):
    """How Envoy names a listener in filter chain errors: its address."""
    if listener.HasField("internal_listener"):
        return "envoy://%s/" % (listener.name,)
    return _addressKey(listener.address)[1]


def _checkFilterChains(listener, path):
    """
    The listener manager's filter chain checks: a TCP listener needs a
    filter chain, and no two chains may match the same connections.
    """
    if listener.HasField("api_listener"):
        return
    isUdp = (listener.address.WhichOneof("address") == "socket_address"
             and listener.address.socket_address.protocol == _UDP)
    chains = list(listener.filter_chains)
    if not chains and not listener.HasField("default_filter_chain"):
        if isUdp:
            return
        report(messages.noFilterChains(_listenerText(listener), path))
    if listener.HasField("filter_chain_matcher"):
        # With a matcher, chains are picked by name: Envoy ignores their
        # filter_chain_match and so their overlaps.
        return
    seen = {}
    for i, chain in enumerate(chains):
        key = chain.filter_chain_match.SerializeToString(deterministic=True)
        if key in seen:
            report(ConfigError(
                "error adding listener '%s': filter chain '%s' has the same matching rules "
                "defined as '%s'. duplicate matcher is: %s @ %s.filter_chains[%d]"
                % (_listenerText(listener), chain.name, seen[key],
                   _matchText(chain.filter_chain_match), path, i)))
        seen[key] = chain.name
    leaves = set()
    for i, chain in enumerate(chains):
        for leaf in _matchLeaves(chain.filter_chain_match):
            if leaf in leaves:
                report(ConfigError(
                    "error adding listener '%s': multiple filter chains with overlapping "
                    "matching rules are defined @ %s.filter_chains[%d]"
                    % (_listenerText(listener), path, i)))
            leaves.add(leaf)


def _matchText(match):
    import json

    from google.protobuf import json_format

    return json.dumps(json_format.MessageToDict(match, preserving_proto_field_name=True),
                      separators=(",", ":"))


def _cidr(cidr):
    prefixLen = cidr.prefix_len.value if cidr.HasField("prefix_len") else None
    try:
        address = ipaddress.ip_address(cidr.address_prefix)
        if prefixLen is None:
            prefixLen = address.max_prefixlen
        return str(ipaddress.ip_network("%s/%d" % (address, prefixLen), strict=False))
    except ValueError:
        return "%s/%s" % (cidr.address_prefix, prefixLen)


def _matchLeaves(match):
    """
    Every combination of criteria a chain matches on, as Envoy's matching
    tree holds them (an empty criterion matches anything); two chains that
    share one overlap.
    """
    import itertools

    port = match.destination_port.value if match.HasField("destination_port") else None
    levels = [
        [port],
        sorted({_cidr(c) for c in match.prefix_ranges}) or [None],
        sorted(set(match.server_names)) or [None],
        [match.transport_protocol],
        sorted(set(match.application_protocols)) or [None],
        sorted({_cidr(c) for c in match.direct_source_prefix_ranges}) or [None],
        [match.source_type],
        sorted({_cidr(c) for c in match.source_prefix_ranges}) or [None],
        sorted(set(match.source_ports)) or [None],
    ]
    return itertools.product(*levels)


def _addressKey(address):
    """
    A comparable key and Envoy's text for one address; the key is C{None}
    for addresses that never clash (port 0, internal addresses).
    """
    kind = address.WhichOneof("address")
    if kind == "socket_address":
        socket = address.socket_address
        host = socket.address
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            pass
        port = socket.port_value if socket.WhichOneof("port_specifier") == "port_value" else 0
        text = addressString(host, port)
        if socket.WhichOneof("port_specifier") == "named_port":
            text = "%s:%s" % (host, socket.named_port)
            return ("socket", socket.protocol, host, socket.named_port), text
        if port == 0:
            return None, text
        return ("socket", socket.protocol, host, port), text
    if kind == "pipe":
        return ("pipe", address.pipe.path), address.pipe.path
    return None, str(kind)


def _checkRouteConfig(hcm, path, clusterNames):
    """
    Envoy's checks of an inline route table when it is built: unique
    domains, and known clusters (C{validate_clusters} defaults to true for
    an inline C{route_config}).
    """
    if hcm.WhichOneof("route_specifier") != "route_config":
        return
    routeConfig = hcm.route_config
    base = path + ".route_config"
    domains = set()
    for v, vhost in enumerate(routeConfig.virtual_hosts):
        for d, domain in enumerate(vhost.domains):
            # Envoy compares domains case-insensitively.
            if domain.lower() in domains:
                report(ConfigError(
                    "Only unique values for domains are permitted. Duplicate entry of domain "
                    "%s in route %s @ %s.virtual_hosts[%d].domains[%d]"
                    % (domain.lower(), routeConfig.name, base, v, d)))
            domains.add(domain.lower())
    if routeConfig.HasField("validate_clusters") and not routeConfig.validate_clusters.value:
        return
    for v, vhost in enumerate(routeConfig.virtual_hosts):
        for r, route in enumerate(vhost.routes):
            if route.WhichOneof("action") != "route":
                continue
            action = route.route
            routePath = "%s.virtual_hosts[%d].routes[%d].route" % (base, v, r)
            specifier = action.WhichOneof("cluster_specifier")
            if specifier == "cluster" and action.cluster not in clusterNames:
                report(ConfigError("route: unknown cluster '%s' @ %s.cluster"
                                   % (action.cluster, routePath)))
            if specifier == "weighted_clusters":
                for w, weighted in enumerate(action.weighted_clusters.clusters):
                    if weighted.name and weighted.name not in clusterNames:
                        report(ConfigError(
                            "route: unknown weighted cluster '%s' @ %s.weighted_clusters"
                            ".clusters[%d].name" % (weighted.name, routePath, w)))
            for m, mirror in enumerate(action.request_mirror_policies):
                if mirror.cluster and mirror.cluster not in clusterNames:
                    report(ConfigError(
                        "route: unknown shadow cluster '%s' @ %s.request_mirror_policies[%d]"
                        ".cluster" % (mirror.cluster, routePath, m)))


def _checkExtensionEntries(message, path):
    for entry, entryPath in _find(message, path, _EXTENSION_ENTRIES):
        if entry.DESCRIPTOR.full_name in _PER_FILTER_CONFIG_HOLDERS:
            for key in sorted(entry.typed_per_filter_config):
                if not entry.typed_per_filter_config[key].type_url:
                    report(messages.noImplementation(
                        key, "%s.typed_per_filter_config[%s]" % (entryPath, key)))
            continue
        typedConfig = entry.DESCRIPTOR.fields_by_name["typed_config"]
        oneof = typedConfig.containing_oneof
        chosen = entry.WhichOneof(oneof.name) if oneof is not None else None
        if chosen is not None and chosen != "typed_config":
            continue
        # An empty typed_config ({}) names no type either.
        if entry.HasField("typed_config") and entry.typed_config.type_url:
            continue
        if getattr(entry, "is_optional", False):
            # An optional HTTP filter Envoy cannot find is skipped.
            continue
        report(messages.noImplementation(entry.name, entryPath))


# --- finding messages of some types anywhere, typed_config included ----------

_descend = {}


def _fieldsToDescend(desc, targets):
    """
    The message fields of C{desc} that can lead to a message of one of the
    C{targets} types (an C{Any} can hold anything), cached per type.
    """
    key = (targets, desc.full_name)
    try:
        return _descend[key]
    except KeyError:
        pass
    # Each type is looked at once; a recursive type reaching itself is
    # answered by the reachability pass below.
    reach = _reachable(desc, targets)
    fields = []
    for fd in desc.fields:
        sub = fd.message_type
        if sub is None:
            continue
        if sub.full_name in targets or reach.get(sub.full_name):
            fields.append(fd)
    _descend[key] = fields
    return fields


_reachCache = {}


def _reachable(root, targets):
    """
    For every message type reachable from C{root}: whether a target type
    (or an C{Any}) is reachable from it.
    """
    cache = _reachCache.setdefault(targets, {})
    if root.full_name in cache:
        return cache
    # Collect the type graph below root that is not yet known.
    graph = {}
    stack = [root]
    while stack:
        desc = stack.pop()
        if desc.full_name in graph or desc.full_name in cache:
            continue
        children = []
        for fd in desc.fields:
            if fd.message_type is not None:
                children.append(fd.message_type)
                stack.append(fd.message_type)
        graph[desc.full_name] = (desc, children)
    # Fixed point: a type reaches a target if a child is one, is an Any,
    # or reaches one.
    state = {name: (name == "google.protobuf.Any" or name in targets) for name in graph}
    changed = True
    while changed:
        changed = False
        for name, (desc, children) in graph.items():
            if state[name]:
                continue
            for child in children:
                childName = child.full_name
                if (childName in targets or childName == "google.protobuf.Any"
                        or state.get(childName, cache.get(childName, False))):
                    state[name] = True
                    changed = True
                    break
    cache.update(state)
    return cache


def _find(message, path, targets):
    """
    Yield C{(message, path)} for every message of a C{targets} type inside
    C{message} (itself included), looking inside C{typed_config} values.
    """
    desc = message.DESCRIPTOR
    name = desc.full_name
    if name in targets:
        yield message, path
    if name == "google.protobuf.Any":
        inner = _unpack(message)
        if inner is not None:
            from txenvoy.config import typed_struct

            try:
                inner, innerPath = typed_struct.unwrap(inner, path)
            except ConfigError:
                # Validation reports a malformed TypedStruct value.
                return
            yield from _find(inner, innerPath, targets)
        return
    for fd in _fieldsToDescend(desc, targets):
        fieldPath = "%s.%s" % (path, fd.name) if path else fd.name
        value = getattr(message, fd.name)
        if fd.is_repeated:
            if _isMap(fd):
                valueField = fd.message_type.fields_by_name["value"]
                if valueField.message_type is None:
                    continue
                for key in sorted(value):
                    yield from _find(value[key], "%s[%s]" % (fieldPath, key), targets)
            else:
                for i, item in enumerate(value):
                    yield from _find(item, "%s[%d]" % (fieldPath, i), targets)
        elif message.HasField(fd.name):
            yield from _find(value, fieldPath, targets)


_maps = {}


def _isMap(fd):
    try:
        return _maps[fd.full_name]
    except KeyError:
        result = _maps[fd.full_name] = bool(fd.message_type.GetOptions().map_entry)
        return result


def _unpack(any_):
    if not any_.type_url:
        return None
    from txenvoy.config import protos

    try:
        inner = protos.messageClass(any_.type_url)()
        inner.ParseFromString(any_.value)
    except Exception:
        # Parsing reports unknown or broken typed_config values; here they
        # hold nothing to check.
        return None
    return inner
