# -*- test-case-name: tests.admin.test_admin -*-
"""
The JSON bodies of the admin interface that Envoy builds from its
C{envoy.admin.v3} protos (C{/config_dump}, C{/clusters?format=json},
C{/listeners?format=json}, C{/server_info}), built here from the same protos
so that field names, field order and the omission of default values are
Envoy's.
"""

import json

from google.protobuf import any_pb2, descriptor, json_format, timestamp_pb2

from envoy.admin.v3 import (
    clusters_pb2,
    config_dump_pb2,
    config_dump_shared_pb2,
    listeners_pb2,
)
from envoy.config.core.v3 import base_pb2, health_check_pb2
from udpa.annotations import sensitive_pb2

from txenvoy.network.address import formatAddress
from txenvoy.network.user_space import InternalAddress
from txenvoy.regex import RegexError, compilePattern

REDACTED = "[redacted]"

_HCM_TYPE = ("envoy.extensions.filters.network.http_connection_manager.v3."
             "HttpConnectionManager")


def toJson(message):
    """A proto as Envoy's admin prints it: 1-space indent, a final newline."""
    return dumpJson(json_format.MessageToDict(message, preserving_proto_field_name=True))


def _wholeFloatsAsInts(value):
    # Envoy's JSON printer writes the double 1000.0 (a Struct number) as 1000.
    if isinstance(value, float):
        if value == value and value not in (float("inf"), float("-inf")) \
                and value == int(value) and abs(value) < 1e16:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _wholeFloatsAsInts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wholeFloatsAsInts(v) for v in value]
    return value


def dumpJson(value):
    """A plain value printed like L{toJson}."""
    return json.dumps(_wholeFloatsAsInts(value), indent=1, ensure_ascii=False) + "\n"


# Redaction (Envoy's MessageUtil::redact).

def _isRepeated(field):
    # protobuf 6+ has is_repeated; older versions only label.
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return repeated
    return field.label == descriptor.FieldDescriptor.LABEL_REPEATED


def _isSensitive(field):
    try:
        return field.GetOptions().Extensions[sensitive_pb2.sensitive]
    except KeyError:
        return False


def redact(message, ancestorIsSensitive=False):
    """
    Replace, in place, every string and bytes value under a field marked
    C{(udpa.annotations.sensitive)} by C{"[redacted]"} and clear its other
    scalars, looking inside C{Any}s, as Envoy's config dump does.
    """
    if message.DESCRIPTOR.full_name == "google.protobuf.Any":
        _redactAny(message, ancestorIsSensitive)
        return
    for field, value in list(message.ListFields()):
        sensitive = ancestorIsSensitive or _isSensitive(field)
        if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                valueField = field.message_type.fields_by_name["value"]
                if valueField.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                    for v in value.values():
                        redact(v, sensitive)
                elif sensitive:
                    _redactMapScalars(value, valueField)
            elif _isRepeated(field):
                for item in value:
                    redact(item, sensitive)
            else:
                redact(value, sensitive)
        elif sensitive:
            if field.type in (descriptor.FieldDescriptor.TYPE_STRING,
                              descriptor.FieldDescriptor.TYPE_BYTES):
                placeholder = REDACTED if field.type == descriptor.FieldDescriptor.TYPE_STRING \
                    else REDACTED.encode("ascii")
                if _isRepeated(field):
                    value[:] = [placeholder] * len(value)
                else:
                    setattr(message, field.name, placeholder)
            else:
                message.ClearField(field.name)


def _redactMapScalars(mapping, valueField):
    if valueField.type == descriptor.FieldDescriptor.TYPE_STRING:
        for k in list(mapping.keys()):
            mapping[k] = REDACTED
    elif valueField.type == descriptor.FieldDescriptor.TYPE_BYTES:
        for k in list(mapping.keys()):
            mapping[k] = REDACTED.encode("ascii")
    else:
        for k in list(mapping.keys()):
            del mapping[k]


def _redactAny(anyMessage, sensitive):
    from txenvoy.config.registry import unpackAny

    try:
        inner = unpackAny(anyMessage, "")
    except Exception:
        # An Any whose type is unknown cannot hold anything we can read.
        return
    redact(inner, sensitive)
    anyMessage.Pack(inner)


def _packed(message):
    a = any_pb2.Any()
    a.Pack(message)
    return a


def redacted(message):
    """A redacted copy of a message."""
    copy = type(message)()
    copy.CopyFrom(message)
    redact(copy)
    return copy


# /config_dump.

class ConfigDumpError(ValueError):
    """A bad C{/config_dump} parameter; C{str()} is Envoy's message."""

    def __init__(self, message, code=400):
        ValueError.__init__(self, message)
        self.code = code


def _timestamp(seconds):
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(round(seconds * 1000)) * 1000000)
    return ts


def _routeConfigs(listeners):
    from txenvoy.config.registry import typeNameOf, unpackAny

    out = []
    for listener in listeners:
        chains = list(listener.filter_chains)
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
        for chain in chains:
            for f in chain.filters:
                if f.HasField("typed_config") and typeNameOf(f.typed_config) == _HCM_TYPE:
                    try:
                        hcm = unpackAny(f.typed_config, "")
                    except Exception:
                        continue
                    if hcm.HasField("route_config"):
                        out.append(hcm.route_config)
    return out


def configDump(bootstrap, lastUpdated, listeners=None, clusters=None, resource=None,
               mask=None, nameRegex=None, includeEds=False, dynamic=None):
    """
    C{/config_dump} for a static configuration.

    @param bootstrap: the Bootstrap proto.
    @param lastUpdated: wall-clock seconds of the config load.
    @param listeners: the active Listener protos (default: the bootstrap's).
    @param clusters: the active Cluster protos (default: the bootstrap's).
    @param resource: C{?resource=}, e.g. C{static_listeners}.
    @param mask: C{?mask=} field mask text.
    @param nameRegex: C{?name_regex=}.
    @param includeEds: C{?include_eds}.
    @param dynamic: what LDS and CDS gave (L{txenvoy.xds.file_xds.FileXds}
        C{dumpState()}): C{{"lds"|"cds": (versionInfo, {name: (proto,
        versionInfo, lastUpdated)})}}; those are dumped as Envoy's
        C{dynamic_listeners} and C{dynamic_active_clusters}, not static;
        C{"lds_warming"}: the names of the added listeners still warming;
        C{"cds_warming"}: those of the CDS clusters still warming
        (C{dynamic_warming_clusters}); C{"cds_replaced"}: C{{name: (proto,
        versionInfo, lastUpdated)}} of the versions serving while those warm;
        C{"lds_draining"}: C{{name: (proto, versionInfo, lastUpdated)}}
        of removed listeners still draining (C{draining_state});
        C{"rds"}: C{[(proto, versionInfo, lastUpdated)]} of the route
        configurations RDS gave (C{dynamic_route_configs}); C{"eds"}:
        C{[(clusterName, ClusterLoadAssignment, addedViaApi)]} of the
        C{EDS} clusters (L{hostsAssignment}), for C{?include_eds};
        C{"sds"}: C{[(name, Secret, versionInfo, lastUpdated)]}
        (C{dynamic_active_secrets}, private keys redacted);
        C{"sds_static"}: the C{Secret}s of C{static_resources.secrets}
        (C{static_secrets}).
    @return: the JSON text.
    @raise ConfigDumpError: for a bad parameter.
    """
    if listeners is None:
        listeners = list(bootstrap.static_resources.listeners)
    if clusters is None:
        clusters = list(bootstrap.static_resources.clusters)
    dynamic = dynamic or {}
    ldsVersion, dynamicListeners = dynamic.get("lds", (None, {}))
    cdsVersion, dynamicClusters = dynamic.get("cds", (None, {}))
    drainingListeners = dynamic.get("lds_draining", {})
    staticListeners = [x for x in listeners if x.name not in dynamicListeners]
    staticClusters = [x for x in clusters if x.name not in dynamicClusters]
    if nameRegex:
        try:
            nameRe = compilePattern(nameRegex)
        except RegexError as e:
            raise ConfigDumpError("INVALID_ARGUMENT: Error while parsing name_regex from %s: %s"
                                  % (nameRegex, e))
        listeners = [x for x in listeners if nameRe.search(x.name)]
        clusters = [x for x in clusters if nameRe.search(x.name)]
        staticListeners = [x for x in staticListeners if nameRe.search(x.name)]
        staticClusters = [x for x in staticClusters if nameRe.search(x.name)]
        dynamicListeners = {k: v for k, v in dynamicListeners.items() if nameRe.search(k)}
        dynamicClusters = {k: v for k, v in dynamicClusters.items() if nameRe.search(k)}
        drainingListeners = {k: v for k, v in drainingListeners.items() if nameRe.search(k)}
    else:
        nameRe = None
    ts = _timestamp(lastUpdated)

    bootstrapDump = config_dump_pb2.BootstrapConfigDump()
    bootstrapDump.bootstrap.CopyFrom(bootstrap)
    bootstrapDump.last_updated.CopyFrom(ts)

    clustersDump = config_dump_shared_pb2.ClustersConfigDump()
    if cdsVersion:
        clustersDump.version_info = cdsVersion
    for c in staticClusters:
        entry = clustersDump.static_clusters.add()
        entry.cluster.Pack(c)
        entry.last_updated.CopyFrom(ts)
    warmingClusters = dynamic.get("cds_warming", ())
    replaced = dynamic.get("cds_replaced", {})
    entries = [(name, entry, False) for name, entry in dynamicClusters.items()]
    entries += [(name, entry, True) for name, entry in replaced.items()
                if nameRe is None or nameRe.search(name)]
    for name, (proto, version, updated), serving in sorted(entries, key=lambda e: e[0]):
        if name in warmingClusters and not serving:
            entry = clustersDump.dynamic_warming_clusters.add()
        else:
            entry = clustersDump.dynamic_active_clusters.add()
        if version:
            entry.version_info = version
        entry.cluster.Pack(proto)
        entry.last_updated.CopyFrom(_timestamp(updated))

    endpointsDump = config_dump_shared_pb2.EndpointsConfigDump()
    edsNames = set()
    for name, assignment, viaApi in dynamic.get("eds", ()):
        edsNames.add(name)
        if nameRe is not None and not nameRe.search(name):
            continue
        if viaApi:
            entry = endpointsDump.dynamic_endpoint_configs.add()
        else:
            entry = endpointsDump.static_endpoint_configs.add()
        entry.endpoint_config.Pack(assignment)
    for c in clusters:
        if c.HasField("load_assignment") and c.name not in edsNames:
            entry = endpointsDump.static_endpoint_configs.add()
            cla = type(c.load_assignment)()
            cla.CopyFrom(c.load_assignment)
            if not cla.cluster_name:
                cla.cluster_name = c.name
            entry.endpoint_config.Pack(cla)

    listenersDump = config_dump_shared_pb2.ListenersConfigDump()
    if ldsVersion:
        listenersDump.version_info = ldsVersion
    for x in staticListeners:
        entry = listenersDump.static_listeners.add()
        entry.listener.Pack(x)
        entry.last_updated.CopyFrom(ts)
    warming = dynamic.get("lds_warming", ())
    for name, (proto, version, updated) in sorted(dynamicListeners.items()):
        entry = listenersDump.dynamic_listeners.add()
        entry.name = name
        # A new listener waiting for its RDS is warming, not active.
        state = entry.warming_state if name in warming else entry.active_state
        if version:
            state.version_info = version
        state.listener.Pack(proto)
        state.last_updated.CopyFrom(_timestamp(updated))
    for name, (proto, version, updated) in sorted(drainingListeners.items()):
        entry = listenersDump.dynamic_listeners.add()
        entry.name = name
        state = entry.draining_state
        if version:
            state.version_info = version
        state.listener.Pack(proto)
        state.last_updated.CopyFrom(_timestamp(updated))

    routesDump = config_dump_shared_pb2.RoutesConfigDump()
    for rc in _routeConfigs(listeners):
        if nameRe is not None and not nameRe.search(rc.name):
            continue
        entry = routesDump.static_route_configs.add()
        entry.route_config.Pack(rc)
        entry.last_updated.CopyFrom(ts)
    for proto, version, updated in sorted(dynamic.get("rds", ()), key=lambda e: e[0].name):
        if nameRe is not None and not nameRe.search(proto.name):
            continue
        entry = routesDump.dynamic_route_configs.add()
        if version:
            entry.version_info = version
        entry.route_config.Pack(proto)
        entry.last_updated.CopyFrom(_timestamp(updated))

    dumps = [bootstrapDump, clustersDump]
    if includeEds:
        dumps.append(endpointsDump)
    secretsDump = config_dump_pb2.SecretsConfigDump()
    for secret in dynamic.get("sds_static", ()):
        if nameRe is not None and not nameRe.search(secret.name):
            continue
        # Envoy gives a static secret no last_updated.
        entry = secretsDump.static_secrets.add()
        entry.name = secret.name
        entry.secret.Pack(secret)
    for name, secret, version, updated in sorted(dynamic.get("sds", ()),
                                                 key=lambda e: e[0]):
        if nameRe is not None and not nameRe.search(name):
            continue
        entry = secretsDump.dynamic_active_secrets.add()
        entry.name = name
        if version:
            entry.version_info = version
        entry.last_updated.CopyFrom(_timestamp(updated))
        entry.secret.Pack(secret)
    dumps += [listenersDump, config_dump_shared_pb2.ScopedRoutesConfigDump(), routesDump,
              secretsDump]

    if resource:
        items = None
        for d in dumps + ([] if includeEds else [endpointsDump]):
            field = d.DESCRIPTOR.fields_by_name.get(resource)
            if field is not None and _isRepeated(field) \
                    and field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                items = list(getattr(d, resource))
                break
        if items is None:
            raise ConfigDumpError("%s not found in config dump" % (resource,), 404)
        dumps = items

    if mask:
        paths = [p.split(".") for p in mask.split(",") if p]
        trimmed = []
        for d in dumps:
            try:
                trimmed.append(trimMessage(d, paths))
            except ValueError:
                if resource:
                    raise ConfigDumpError(
                        "FieldMask %s could not be successfully used." % (mask,))
        if not trimmed:
            raise ConfigDumpError(
                "FieldMask %s could not be successfully applied to any configs." % (mask,))
        dumps = trimmed

    out = config_dump_pb2.ConfigDump()
    for d in dumps:
        redact(d)
        out.configs.add().Pack(d)
    return toJson(out)


def trimMessage(message, paths):
    """
    A copy of C{message} with only the fields named by a field mask's
    C{paths} (lists of field names), looking inside C{Any}s as Envoy's
    config dump does.

    @raise ValueError: when a path does not name fields of the message.
    """
    if message.DESCRIPTOR.full_name == "google.protobuf.Any":
        from txenvoy.config.registry import unpackAny

        if not message.type_url:
            return type(message)()
        try:
            inner = unpackAny(message, "")
        except Exception:
            raise ValueError(message.type_url)
        return _packed(trimMessage(inner, paths))
    out = type(message)()
    groups = {}
    for path in paths:
        field = message.DESCRIPTOR.fields_by_name.get(path[0])
        if field is None:
            raise ValueError(path[0])
        if len(path) > 1 and (field.message_type is None or _isRepeated(field)):
            raise ValueError(".".join(path))
        groups.setdefault(path[0], []).append(path[1:])
    for name, rests in groups.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        if any(not rest for rest in rests):
            _copyField(message, out, field)
        elif message.HasField(name):
            getattr(out, name).CopyFrom(trimMessage(getattr(message, name), rests))
    return out


def _copyField(source, target, field):
    name = field.name
    if _isRepeated(field):
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            valueIsMessage = field.message_type.fields_by_name["value"].message_type is not None
            for k, v in getattr(source, name).items():
                if valueIsMessage:
                    getattr(target, name)[k].CopyFrom(v)
                else:
                    getattr(target, name)[k] = v
        else:
            getattr(target, name).extend(getattr(source, name))
    elif field.message_type is not None:
        if source.HasField(name):
            getattr(target, name).CopyFrom(getattr(source, name))
    else:
        setattr(target, name, getattr(source, name))


# /clusters.

_COUNTERS = ("cx_connect_fail", "cx_total", "rq_error", "rq_success", "rq_timeout", "rq_total")
_GAUGES = ("cx_active", "rq_active", "rq_pending_active")
_TEXT_STATS = ("cx_active", "cx_connect_fail", "cx_total", "rq_active", "rq_error",
               "rq_pending_active", "rq_success", "rq_timeout", "rq_total")
_THRESHOLDS = ("max_connections", "max_pending_requests", "max_requests", "max_retries")

_FLAG_FIELDS = {
    "/failed_active_hc": "failed_active_health_check",
    "/failed_outlier_check": "failed_outlier_check",
    "/degraded_active_hc": "failed_active_degraded_check",
    "/pending_dynamic_removal": "pending_dynamic_removal",
    "/pending_active_hc": "pending_active_hc",
    "/excluded_via_immediate_hc_fail": "excluded_via_immediate_hc_fail",
    "/active_hc_timeout": "active_hc_timeout",
}


def _hostStat(host, name):
    try:
        return int(host.stats(name))
    except Exception:
        return 0


def _hostFlags(host):
    try:
        return host.healthFlags()
    except Exception:
        return "healthy"


def _locality(host):
    locality = getattr(host, "locality", None)
    if locality is None:
        return "", "", ""
    if isinstance(locality, tuple):
        return tuple(locality) + ("",) * (3 - len(locality))
    return (getattr(locality, "region", ""), getattr(locality, "zone", ""),
            getattr(locality, "subZone", ""))


_EDS_STATUS = {"UNKNOWN": 0, "HEALTHY": 1, "UNHEALTHY": 2, "DRAINING": 3, "TIMEOUT": 4,
               "DEGRADED": 5}


def hostsAssignment(cluster):
    """
    An C{EDS} cluster's C{ClusterLoadAssignment} as Envoy dumps it: made
    from its hosts (its priority set), each endpoint with its weight and
    health status, each locality with its weight, and the policy's
    C{overprovisioning_factor}.
    """
    from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment

    cla = ClusterLoadAssignment()
    cla.cluster_name = cluster.serviceName
    weights = {}
    assignment = getattr(cluster, "assignment", None)
    for lle in assignment.endpoints if assignment is not None else ():
        key = (lle.priority, lle.locality.region, lle.locality.zone, lle.locality.sub_zone)
        weights[key] = lle.load_balancing_weight.value
    groups = {}
    for host in sorted(cluster.hosts, key=lambda h: h.priority):
        loc = host.locality
        key = (host.priority, loc.region, loc.zone, loc.subZone)
        lle = groups.get(key)
        if lle is None:
            lle = groups[key] = cla.endpoints.add()
            if any(key[1:]):
                lle.locality.region, lle.locality.zone, lle.locality.sub_zone = key[1:]
            lle.load_balancing_weight.value = weights.get(key, 0)
            lle.priority = host.priority
        lbe = lle.lb_endpoints.add()
        setAddress(lbe.endpoint.address, *host.address)
        if host.hostname:
            lbe.endpoint.hostname = host.hostname
        hcc = lbe.endpoint.health_check_config
        hcc.SetInParent()
        hcc.port_value = host.healthCheckPort
        hcc.hostname = host.healthCheckHostname
        hcc.disable_active_health_check = host.disableActiveHealthCheck
        lbe.health_status = _EDS_STATUS.get(host.edsHealthStatus(), 0)
        lbe.load_balancing_weight.value = host.weight
    cla.policy.overprovisioning_factor.value = cluster.info.lbConfig.overprovisioningFactor
    return cla


def _thresholds(cluster, priority):
    managers = getattr(cluster.info, "resourceManagers", None)
    if isinstance(managers, dict) and priority.upper() in managers:
        # The live limits, as Envoy prints them: a retry budget's moves
        # with the load.
        m = managers[priority.upper()]
        return {"max_connections": m.connections.max,
                "max_pending_requests": m.pendingRequests.max,
                "max_requests": m.requests.max, "max_retries": m.retries.max}
    breakers = getattr(cluster.info, "circuitBreakers", None)
    t = None
    if breakers is not None:
        if isinstance(breakers, dict):
            t = breakers.get(priority)
        else:
            t = getattr(breakers, priority, None)
    values = {}
    for name in _THRESHOLDS:
        if t is None:
            v = None
        elif isinstance(t, dict):
            v = t.get(name)
        else:
            v = getattr(t, name, None)
        if v is None:
            v = 3 if name == "max_retries" else 1024
        values[name] = int(v)
    return values


def _hasOutlier(cluster):
    proto = getattr(cluster, "proto", None)
    try:
        return proto is not None and proto.HasField("outlier_detection")
    except ValueError:
        return False


def _clusterItems(clusterManager, filterRe):
    clusters = getattr(clusterManager, "clusters", {}) or {}
    items = clusters.items() if isinstance(clusters, dict) else \
        ((c.info.name, c) for c in clusters)
    return [(name, c) for name, c in items if filterRe is None or filterRe.search(name)]


def clustersText(clusterManager, filterRe=None):
    """C{/clusters}: Envoy's C{name::...} lines."""
    lines = []
    for name, cluster in _clusterItems(clusterManager, filterRe):
        lines.append("%s::observability_name::%s" % (name, name))
        if _hasOutlier(cluster):
            for k in ("success_rate_average", "success_rate_ejection_threshold",
                      "local_origin_success_rate_average",
                      "local_origin_success_rate_ejection_threshold"):
                lines.append("%s::outlier::%s::-1" % (name, k))
        for label, priority in (("default_priority", "default"), ("high_priority", "high")):
            for k, v in _thresholds(cluster, priority).items():
                lines.append("%s::%s::%s::%d" % (name, label, k, v))
        lines.append("%s::added_via_api::%s" % (
            name, "true" if getattr(cluster.info, "addedViaApi", False) else "false"))
        if getattr(cluster, "serviceName", None):
            lines.append("%s::eds_service_name::%s" % (name, cluster.serviceName))
        for host in getattr(cluster, "hosts", ()):
            prefix = "%s::%s::" % (name, host.addressString)
            for k in _TEXT_STATS:
                lines.append("%s%s::%d" % (prefix, k, _hostStat(host, k)))
            region, zone, subZone = _locality(host)
            lines.append("%shostname::%s" % (prefix, getattr(host, "hostname", "") or ""))
            lines.append("%shealth_flags::%s" % (prefix, _hostFlags(host)))
            lines.append("%sweight::%d" % (prefix, getattr(host, "weight", 1)))
            lines.append("%sregion::%s" % (prefix, region))
            lines.append("%szone::%s" % (prefix, zone))
            lines.append("%ssub_zone::%s" % (prefix, subZone))
            lines.append("%scanary::%s" % (
                prefix, "true" if getattr(host, "canary", False) else "false"))
            lines.append("%spriority::%d" % (prefix, getattr(host, "priority", 0)))
            lines.append("%ssuccess_rate::-1" % (prefix,))
            lines.append("%slocal_origin_success_rate::-1" % (prefix,))
    return "".join(line + "\n" for line in lines)


def clustersJson(clusterManager, filterRe=None):
    """C{/clusters?format=json}, from C{envoy.admin.v3.Clusters}."""
    out = clusters_pb2.Clusters()
    for name, cluster in _clusterItems(clusterManager, filterRe):
        status = out.cluster_statuses.add()
        status.name = name
        status.added_via_api = bool(getattr(cluster.info, "addedViaApi", False))
        if getattr(cluster, "serviceName", None):
            status.eds_service_name = cluster.serviceName
        for host in getattr(cluster, "hosts", ()):
            hs = status.host_statuses.add()
            setAddress(hs.address, host.address[0], host.address[1])
            for k in _COUNTERS:
                m = hs.stats.add()
                m.name = k
                m.value = _hostStat(host, k)
            for k in _GAUGES:
                m = hs.stats.add()
                m.type = m.GAUGE
                m.name = k
                m.value = _hostStat(host, k)
            flags = _hostFlags(host)
            for flag, field in _FLAG_FIELDS.items():
                if flag in flags:
                    setattr(hs.health_status, field, True)
            hs.health_status.eds_health_status = (
                health_check_pb2.UNHEALTHY if "/failed_eds_health" in flags
                else health_check_pb2.DEGRADED if "/degraded_eds_health" in flags
                else health_check_pb2.HEALTHY)
            hs.weight = getattr(host, "weight", 1)
            hostname = getattr(host, "hostname", "") or ""
            if hostname:
                hs.hostname = hostname
            hs.priority = getattr(host, "priority", 0)
            region, zone, subZone = _locality(host)
            hs.locality.SetInParent()
            hs.locality.region = region
            hs.locality.zone = zone
            hs.locality.sub_zone = subZone
        for priority in ("default", "high"):
            t = status.circuit_breakers.thresholds.add()
            if priority == "high":
                t.priority = base_pb2.HIGH
            for k, v in _thresholds(cluster, priority).items():
                getattr(t, k).value = v
        status.observability_name = name
    return toJson(out)


# /listeners.

def listenersText(listeners):
    """C{/listeners}: C{name::host:port} per listener."""
    return "".join("%s::%s\n" % (x.name, formatAddress(x.address)) for x in listeners)


def listenersJson(listeners):
    """C{/listeners?format=json}, from C{envoy.admin.v3.Listeners}."""
    out = listeners_pb2.Listeners()
    for x in listeners:
        status = out.listener_statuses.add()
        status.name = x.name
        if isinstance(x.address, tuple):
            setAddress(status.local_address, *x.address)
        else:
            setAddress(status.local_address, x.address, 0)
    return toJson(out)


def setAddress(message, host, port):
    """
    Fill an C{envoy.config.core.v3.Address} as Envoy's admin prints one: a
    C{socket_address}, a C{pipe} (a L{txenvoy.network.pipe.PipeAddress}) or
    an C{envoy_internal_address}.
    """
    if isinstance(host, str):
        message.socket_address.address = host
        message.socket_address.port_value = port
    elif isinstance(host, InternalAddress):
        internal = message.envoy_internal_address
        internal.server_listener_name = host.listenerName
        if host.endpointId:
            internal.endpoint_id = host.endpointId
    else:
        message.pipe.path = host.path


# /server_info.

#: Envoy's order of C{command_line_options} keys.
COMMAND_LINE_ORDER = (
    "base_id", "concurrency", "config_path", "config_yaml", "allow_unknown_static_fields",
    "admin_address_path", "local_address_ip_version", "log_level", "component_log_level",
    "log_format", "log_path", "service_cluster", "service_node", "service_zone",
    "file_flush_interval", "drain_time", "parent_shutdown_time", "mode",
    "disable_hot_restart", "enable_mutex_tracing", "restart_epoch", "cpuset_threads",
    "reject_unknown_dynamic_fields", "log_format_escaped", "disabled_extensions",
    "ignore_unknown_dynamic_fields", "use_dynamic_base_id", "base_id_path", "drain_strategy",
    "enable_fine_grain_logging", "socket_path", "socket_mode", "enable_core_dump",
    "stats_tag", "skip_hot_restart_on_no_parent", "skip_hot_restart_parent_stats",
    "skip_deprecated_logs", "file_flush_min_size", "log_stacktrace_single_entry",
)


def orderedOptions(options):
    """C{command_line_options} keys in Envoy's order; unknown keys last."""
    options = dict(options or {})
    out = {k: options.pop(k) for k in COMMAND_LINE_ORDER if k in options}
    out.update(options)
    return out


def protoToOrderedDict(message):
    """
    A proto as a dict with every field that has no presence printed (as
    Envoy's C{/server_info} does), keys in field-number order.
    """
    d = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                  always_print_fields_with_no_presence=True)
    return _order(d, message.DESCRIPTOR)


_WELL_KNOWN = ("google.protobuf.",)


def _order(d, desc):
    if not isinstance(d, dict) or desc.full_name.startswith(_WELL_KNOWN):
        return d
    out = {}
    fields = sorted(desc.fields, key=lambda f: f.number)
    for f in fields:
        if f.name not in d:
            continue
        v = d[f.name]
        if f.message_type is not None:
            if f.message_type.GetOptions().map_entry:
                valueField = f.message_type.fields_by_name["value"]
                if valueField.message_type is not None:
                    v = {k: _order(x, valueField.message_type) for k, x in v.items()}
            elif isinstance(v, list):
                v = [_order(x, f.message_type) for x in v]
            else:
                v = _order(v, f.message_type)
        out[f.name] = v
    for k, v in d.items():
        if k not in out:
            out[k] = v
    return out
