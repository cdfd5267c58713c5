# -*- test-case-name: tests.extensions.filters.http.test_http_connection_manager -*-
"""
C{envoy.filters.network.http_connection_manager}: compiles an
C{HttpConnectionManager} once into a
L{txenvoy.http.conn_manager.ConnectionManagerConfig} (route table, HTTP
filter factories, access logs, timeouts, header policies).

Every field is either honoured, accepted because it changes nothing for
HTTP/1.1 (C{stream_flush_timeout}),
or rejected with L{UnsupportedField} naming its path.
"""

import ipaddress

import attr

from txenvoy.accesslog.filters import createAccessLog
from txenvoy.config import registry
from txenvoy.config.errors import (
    FAILED,
    ConfigError,
    UnsupportedExtension,
    UnsupportedField,
    attempt,
    report,
)
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.config.registry import Category, extension
from txenvoy.http import conn_manager_utility
from txenvoy.http.conn_manager import ConnectionManagerConfig
from txenvoy.http.filter_config import perFilterConfigSources
from txenvoy.http.http2.options import http2OptionsFromProto
from txenvoy.http.local_reply import compileLocalReplyConfig
from txenvoy.router.config import RouteTable
from txenvoy.tracing.http_tracer import compileTracing

#: HttpConnectionManager fields txenvoy compiles (or that change nothing
#: for HTTP/1.1); any other field that is set is rejected.
SUPPORTED_FIELDS = frozenset([
    "codec_type", "stat_prefix", "route_config", "rds", "http_filters", "access_log",
    "common_http_protocol_options", "http_protocol_options", "server_name",
    "server_header_transformation", "max_request_headers_kb", "stream_idle_timeout",
    "request_timeout", "request_headers_timeout", "drain_timeout", "delayed_close_timeout",
    "stream_flush_timeout", "use_remote_address", "xff_num_trusted_hops",
    "internal_address_config", "skip_xff_append", "via", "generate_request_id",
    "preserve_external_request_id", "always_set_request_id_in_response",
    "forward_client_cert_details", "set_current_client_cert_details", "add_user_agent",
    "proxy_100_continue", "upgrade_configs", "normalize_path",
    "merge_slashes", "path_with_escaped_slashes_action", "request_id_extension",
    "local_reply_config", "strip_matching_host_port", "strip_any_host_port",
    "stream_error_on_invalid_http_message", "tracing", "http2_protocol_options",
    "scheme_header_transformation",
])

_COMMON_FIELDS = frozenset(["idle_timeout", "max_connection_duration", "max_headers_count",
                            "max_stream_duration", "headers_with_underscores_action",
                            "max_requests_per_connection"])
_HTTP1_FIELDS = frozenset(["accept_http_10", "default_host_for_http_10", "allow_chunked_length",
                           "enable_trailers", "allow_absolute_url"])
_HTTP_FILTER_FIELDS = frozenset(["name", "typed_config", "is_optional", "disabled"])
_UPGRADE_FIELDS = frozenset(["upgrade_type", "enabled"])
_UNDERSCORE_ACTIONS = {0: "ALLOW", 1: "REJECT_REQUEST", 2: "DROP_HEADER"}
_UUID_REQUEST_ID = "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig"


def _filterTypeName(entry):
    typeName = registry.typeNameOf(entry.typed_config)
    factory = registry.lookup(Category.HTTP_FILTER, typeName)
    if factory is not None and factory.names:
        return factory.names[0]
    return entry.name or typeName


def _compileRouteSpecificConfigs(factories, routeTable, path):
    """
    Compile every route's C{typed_per_filter_config} for the filters of
    this chain when the config loads, as Envoy does: a mistake in one fails
    the config with its path.
    """
    for levelConfigs, cors, levelPath in perFilterConfigSources(routeTable, path):
        for name, factory in factories:
            routeConfigs = getattr(factory, "routeConfigs", None)
            source = levelConfigs.get(name)
            if routeConfigs is not None and source is not None:
                attempt(routeConfigs.precompile, source,
                        "%s.typed_per_filter_config[%s]" % (levelPath, name))
            legacy = getattr(factory, "legacyPolicies", None)
            if legacy is not None and cors is not None:
                attempt(legacy.precompile, cors, levelPath + ".cors")


def _compileFilters(message, context, path, statPrefix):
    """@return: C{[(name, factory)]} in config order."""
    filterContext = context.child(path)
    filterContext.httpStatPrefix = statPrefix
    factories = []
    entries = list(message.http_filters)
    for i, entry in enumerate(entries):
        fpath = "%s.http_filters[%d]" % (path, i)
        checkFields(entry, _HTTP_FILTER_FIELDS, fpath)
        if entry.disabled:
            report(UnsupportedField(fpath + ".disabled"))
        try:
            factory = attempt(filterContext.createExtension, Category.HTTP_FILTER, entry, fpath)
        except UnsupportedExtension:
            if entry.is_optional:
                continue
            raise
        if factory is FAILED:
            # Reported; whether the chain ends in a terminal filter is
            # unknown now.
            continue
        terminal = bool(getattr(factory, "terminal", False))
        last = i == len(entries) - 1
        if terminal and not last:
            raise ConfigError(
                "Error: terminal filter named %s of type %s must be the last filter in a "
                "http filter chain. @ %s" % (entry.name, _filterTypeName(entry), fpath))
        if last and not terminal:
            raise ConfigError(
                "Error: non-terminal filter named %s of type %s is the last filter in a "
                "http filter chain. @ %s" % (entry.name, _filterTypeName(entry), fpath))
        factories.append((entry.name, factory))
    return factories


def _knownClusters(context):
    bootstrap = context.bootstrap
    if bootstrap is None:
        return None
    known = {c.name for c in bootstrap.static_resources.clusters}
    manager = getattr(context, "clusterManager", None)
    if manager is not None:
        # Those CDS gave too (an LDS listener is checked against them).
        known.update(manager.clusters)
    return known


@extension(Category.NETWORK_FILTER,
           "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
           "envoy.filters.network.http_connection_manager", fields=SUPPORTED_FIELDS)
def createHttpConnectionManager(message, context):
    """Compile an C{HttpConnectionManager} into a L{ConnectionManagerConfig}."""
    path = context.configPath
    config = ConnectionManagerConfig()
    if not message.stat_prefix:
        raise ConfigError("%s.stat_prefix: value length must be at least 1 characters" % (path,))
    config.statPrefix = "http.%s." % (message.stat_prefix,)

    if message.codec_type not in (0, 1, 2):
        report(UnsupportedField(path + ".codec_type", "only AUTO, HTTP1 and HTTP2"))
    config.codecType = message.codec_type
    if message.HasField("http2_protocol_options"):
        options = attempt(http2OptionsFromProto, message.http2_protocol_options,
                          path + ".http2_protocol_options")
        if options is not FAILED:
            config.http2Options = options
    if message.HasField("route_config"):
        # Reported inside a collection of errors; the filters are checked too.
        routeTable = attempt(RouteTable.fromProto, message.route_config,
                             path + ".route_config", _knownClusters(context))
        if routeTable is not FAILED:
            config.routeTable = routeTable
    elif message.HasField("rds"):
        providers = getattr(context.server, "routeConfigProviders", None)
        rds = None
        if providers is None:
            report(UnsupportedField(path + ".rds", "only in a server"))
        else:
            rds = attempt(providers.subscribe, message.rds, config.statPrefix, path + ".rds")
    else:
        raise ConfigError("%s: one of route_config, rds or scoped_routes is required" % (path,))

    config.filterFactories = _compileFilters(message, context, path, config.statPrefix)
    if message.HasField("route_config") and config.routeTable is not None:
        _compileRouteSpecificConfigs(config.filterFactories, config.routeTable,
                                     path + ".route_config")
    elif message.HasField("rds") and rds not in (None, FAILED):
        factories = config.filterFactories
        attempt(rds.attach, config, lambda table: _compileRouteSpecificConfigs(
            factories, table, "resources[0]"))
        targets = getattr(context, "initTargets", None)
        if targets is not None:
            # The listener warms until its route table arrived.
            targets.append(rds)
    config.accessLogs = tuple(
        createAccessLog(al, context, "%s.access_log[%d]" % (path, i))
        for i, al in enumerate(message.access_log))

    common = message.common_http_protocol_options
    cpath = path + ".common_http_protocol_options"
    checkFields(common, _COMMON_FIELDS, cpath)
    if common.HasField("idle_timeout"):
        config.idleTimeout = durationSeconds(common.idle_timeout)
    if common.HasField("max_connection_duration"):
        config.maxConnectionDuration = durationSeconds(common.max_connection_duration)
    if common.HasField("max_stream_duration"):
        config.maxStreamDuration = durationSeconds(common.max_stream_duration)
    if common.HasField("max_headers_count"):
        config.maxHeadersCount = common.max_headers_count.value
    if common.HasField("max_requests_per_connection"):
        config.maxRequestsPerConnection = common.max_requests_per_connection.value
    config.headersWithUnderscoresAction = _UNDERSCORE_ACTIONS[
        common.headers_with_underscores_action]

    http1 = message.http_protocol_options
    hpath = path + ".http_protocol_options"
    checkFields(http1, _HTTP1_FIELDS, hpath)
    config.acceptHttp10 = http1.accept_http_10
    if http1.default_host_for_http_10:
        config.defaultHostForHttp10 = http1.default_host_for_http_10.encode("utf-8")
    if http1.allow_chunked_length:
        report(UnsupportedField(hpath + ".allow_chunked_length", "only false"))
    if http1.HasField("allow_absolute_url") and not http1.allow_absolute_url.value:
        report(UnsupportedField(hpath + ".allow_absolute_url", "only true"))
    config.enableTrailers = http1.enable_trailers

    if message.server_name:
        config.serverName = message.server_name.encode("utf-8")
    config.serverHeaderTransformation = message.server_header_transformation
    if message.HasField("max_request_headers_kb"):
        kb = message.max_request_headers_kb.value
        if not 0 < kb <= 8192:
            raise ConfigError("%s.max_request_headers_kb: value must be inside range (0, 8192]"
                              % (path,))
        config.maxRequestHeadersKb = kb
    if message.HasField("stream_idle_timeout"):
        config.streamIdleTimeout = durationSeconds(message.stream_idle_timeout)
    if message.HasField("request_timeout"):
        config.requestTimeout = durationSeconds(message.request_timeout)
    if message.HasField("request_headers_timeout"):
        config.requestHeadersTimeout = durationSeconds(message.request_headers_timeout)
    if message.HasField("delayed_close_timeout"):
        config.delayedCloseTimeout = durationSeconds(message.delayed_close_timeout)
    if message.HasField("drain_timeout"):
        config.drainTimeout = durationSeconds(message.drain_timeout)

    if message.HasField("use_remote_address"):
        config.useRemoteAddress = message.use_remote_address.value
    config.xffNumTrustedHops = message.xff_num_trusted_hops
    config.skipXffAppend = message.skip_xff_append
    if message.HasField("internal_address_config"):
        iac = message.internal_address_config
        networks = []
        for i, r in enumerate(iac.cidr_ranges):
            prefix = r.prefix_len.value if r.HasField("prefix_len") else (
                128 if ":" in r.address_prefix else 32)
            try:
                networks.append(ipaddress.ip_network("%s/%d" % (r.address_prefix, prefix),
                                                     strict=False))
            except ValueError as e:
                raise ConfigError("%s.internal_address_config.cidr_ranges[%d]: malformed IP "
                                  "address: %s" % (path, i, e))
        config.internalNetworks = tuple(networks)
    if message.via:
        config.via = message.via.encode("utf-8")
    if message.HasField("generate_request_id"):
        config.generateRequestId = message.generate_request_id.value
    config.preserveExternalRequestId = message.preserve_external_request_id
    config.alwaysSetRequestIdInResponse = message.always_set_request_id_in_response
    if message.add_user_agent.value:
        # Envoy's userAgent(): the node's cluster (--service-cluster).
        node = getattr(getattr(context, "server", None), "node", None)
        config.userAgent = (node.cluster if node is not None else "").encode("utf-8")
        config.nodeName = (node.id if node is not None else "").encode("utf-8")
    config.forwardClientCert = message.forward_client_cert_details
    if message.HasField("set_current_client_cert_details"):
        details = message.set_current_client_cert_details
        checkFields(details, ("subject", "cert", "chain", "dns", "uri"),
                    path + ".set_current_client_cert_details")
        # Envoy's order: Cert, Chain, Subject, URI, DNS.
        config.clientCertDetails = tuple(name for name, on in (
            ("Cert", details.cert), ("Chain", details.chain),
            ("Subject", details.subject.value), ("URI", details.uri), ("DNS", details.dns))
            if on)
    if message.proxy_100_continue:
        report(UnsupportedField(path + ".proxy_100_continue", "only false"))
    if message.stream_error_on_invalid_http_message.value and not \
            message.http2_protocol_options.HasField(
                "override_stream_error_on_invalid_http_message"):
        # Envoy: the HTTP/2 codec's setting unless its own override is set
        # (a forbidden request head resets only its stream). Envoy 1.40's
        # HTTP/1 codec answers 400 and closes the connection either way.
        config.http2Options = attr.evolve(config.http2Options,
                                          streamErrorOnInvalidHttpMessage=True)
    if message.HasField("request_id_extension"):
        ext = message.request_id_extension
        typeName = registry.typeNameOf(ext.typed_config)
        if typeName != _UUID_REQUEST_ID:
            report(UnsupportedExtension(path + ".request_id_extension.typed_config", typeName))

    upgrades = set()
    for i, upgrade in enumerate(message.upgrade_configs):
        upath = "%s.upgrade_configs[%d]" % (path, i)
        checkFields(upgrade, _UPGRADE_FIELDS, upath)
        enabled = upgrade.enabled.value if upgrade.HasField("enabled") else True
        if enabled:
            upgrades.add(upgrade.upgrade_type.lower().encode("utf-8"))
    config.upgradeTypes = frozenset(upgrades)

    if message.HasField("normalize_path"):
        config.normalizePath = message.normalize_path.value
    config.mergeSlashes = message.merge_slashes
    action = message.path_with_escaped_slashes_action
    config.escapedSlashesAction = conn_manager_utility.KEEP_UNCHANGED if action == 0 else action
    config.stripAnyHostPort = message.strip_any_host_port
    config.stripMatchingHostPort = message.strip_matching_host_port
    if message.HasField("scheme_header_transformation"):
        transformation = message.scheme_header_transformation
        tpath = path + ".scheme_header_transformation"
        checkFields(transformation, ("scheme_to_overwrite",), tpath)
        scheme = transformation.scheme_to_overwrite
        if scheme and scheme not in ("http", "https"):
            raise ConfigError("%s.scheme_to_overwrite: Proto constraint validation failed "
                              "(SchemeHeaderTransformationValidationError.SchemeToOverwrite: "
                              "value must be in list [http https])" % (tpath,))
        if scheme:
            config.schemeToOverwrite = scheme.encode("ascii")

    if message.HasField("local_reply_config"):
        config.localReply = compileLocalReplyConfig(message.local_reply_config,
                                                    path + ".local_reply_config")
    if message.HasField("tracing"):
        tracing = attempt(compileTracing, message.tracing, context.child(path + ".tracing"),
                          path + ".tracing", config.statPrefix)
        if tracing is not FAILED:
            config.tracing = tracing
    config.server = context.server
    return config.finish()
