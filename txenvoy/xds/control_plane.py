# -*- test-case-name: tests.xds.test_grpc_mux -*-
"""
From a C{ConfigSource} that names a control plane to a started
L{txenvoy.xds.subscription.Subscription} on its transport: C{ads} shares
the one stream of C{dynamic_resources.ads_config}; an
C{api_config_source} gets a stream (C{GRPC}, C{DELTA_GRPC}) or a poller
(C{REST}) of its own. Files are not handled here
(L{txenvoy.xds.config_source}).

Every field is checked with its path: C{transport_api_version} V2 is
refused as Envoy refuses it, an C{envoy_grpc} cluster must be a static
one, and what txenvoy does not do yet is named.
"""

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields, durationSeconds
from txenvoy.xds.grpc_mux import (
    ADS_METHOD, ControlPlaneTarget, GrpcMux, JitteredBackoff, TokenBucket)
from txenvoy.xds.resources import streamMethod
from txenvoy.xds.subscription import DEFAULT_INITIAL_FETCH_TIMEOUT, Subscription

_API_FIELDS = ("api_type", "transport_api_version", "cluster_names", "grpc_services",
               "refresh_delay", "request_timeout", "rate_limit_settings",
               "set_node_on_first_message_only", "config_validators")
_SOURCE_FIELDS = ("path", "path_config_source", "api_config_source", "ads",
                  "initial_fetch_timeout", "resource_api_version")

REST, GRPC, DELTA_GRPC, AGGREGATED_GRPC, AGGREGATED_DELTA_GRPC = 1, 2, 3, 5, 6
V2 = 1

DELTA_ADS_METHOD = ("/envoy.service.discovery.v3.AggregatedDiscoveryService/"
                    "DeltaAggregatedResources")


def isControlPlane(source):
    """Whether a C{ConfigSource} names a control plane (not a file)."""
    return source.WhichOneof("config_source_specifier") in ("ads", "api_config_source")


def initialFetchTimeout(source):
    if source.HasField("initial_fetch_timeout"):
        return durationSeconds(source.initial_fetch_timeout)
    return DEFAULT_INITIAL_FETCH_TIMEOUT


class ApiSource:
    """A checked C{ApiConfigSource}."""

    def __init__(self, api, path, bootstrap):
        checkFields(api, _API_FIELDS, path)
        if api.transport_api_version == V2:
            raise ConfigError("%s.transport_api_version: V2 (and AUTO) xDS transport protocol "
                              "versions are deprecated" % (path,))
        self.apiType = api.api_type
        self.setNodeOnFirstMessageOnly = api.set_node_on_first_message_only
        self.rateLimit = None
        if api.HasField("rate_limit_settings"):
            settings = api.rate_limit_settings
            self.rateLimit = (settings.max_tokens.value if settings.HasField("max_tokens")
                              else 100,
                              settings.fill_rate.value if settings.HasField("fill_rate")
                              else 10.0)
        self.refreshDelay = (durationSeconds(api.refresh_delay)
                             if api.HasField("refresh_delay") else None)
        self.requestTimeout = (durationSeconds(api.request_timeout)
                               if api.HasField("request_timeout") else 1.0)
        clusters = {c.name for c in bootstrap.static_resources.clusters}
        if self.apiType == REST:
            if len(api.cluster_names) != 1:
                raise ConfigError("%s: REST needs exactly one cluster in cluster_names"
                                  % (path,))
            if api.grpc_services:
                raise ConfigError("%s: grpc_services must not be set for REST" % (path,))
            if self.refreshDelay is None:
                raise ConfigError("%s.refresh_delay: required for REST" % (path,))
            if api.config_validators:
                # Envoy runs them in its gRPC muxes only.
                raise UnsupportedField(path + ".config_validators", "only for GRPC and DELTA_GRPC")
            self.clusterName = api.cluster_names[0]
            self.grpc = None
        elif self.apiType in (GRPC, DELTA_GRPC, AGGREGATED_GRPC, AGGREGATED_DELTA_GRPC):
            if api.cluster_names:
                raise ConfigError("%s.cluster_names: must not be set for a gRPC API; use "
                                  "grpc_services" % (path,))
            if len(api.grpc_services) != 1:
                raise ConfigError("%s.grpc_services: exactly one is needed" % (path,))
            gpath = path + ".grpc_services[0]"
            service = api.grpc_services[0]
            checkFields(service, ("envoy_grpc", "timeout", "initial_metadata"), gpath)
            if not service.HasField("envoy_grpc"):
                raise UnsupportedField(gpath, "only envoy_grpc")
            checkFields(service.envoy_grpc, ("cluster_name", "authority", "retry_policy"),
                        gpath + ".envoy_grpc")
            self.clusterName = service.envoy_grpc.cluster_name
            self.authority = service.envoy_grpc.authority or self.clusterName
            self.metadata = tuple((m.key.lower(), m.value) for m in service.initial_metadata)
            self.backoff = (0.5, 30.0)
            retry = service.envoy_grpc.retry_policy
            if retry.HasField("retry_back_off"):
                back = retry.retry_back_off
                base = durationSeconds(back.base_interval)
                self.backoff = (base, durationSeconds(back.max_interval)
                                if back.HasField("max_interval") else base * 10)
            self.grpc = service
        else:
            raise ConfigError("%s.api_type: unsupported API type %d" % (path, self.apiType))
        if self.clusterName not in clusters:
            kind = "REST" if self.apiType == REST else "gRPC client"
            raise ConfigError("%s: Unknown %s cluster '%s'" % (path, kind, self.clusterName))
        self.credentials = self.tlsName = None
        if self.grpc is not None:
            from txenvoy.xds.grpc_credentials import channelCredentials

            [(i, cluster)] = [(i, c) for i, c in enumerate(bootstrap.static_resources.clusters)
                              if c.name == self.clusterName][:1]
            self.credentials, self.tlsName = channelCredentials(
                cluster, "static_resources.clusters[%d]" % (i,))
        self.delta = self.apiType in (DELTA_GRPC, AGGREGATED_DELTA_GRPC)
        self.validators = configValidators(api.config_validators, path + ".config_validators",
                                           bootstrap)


def configValidators(entries, path, bootstrap):
    """
    The L{txenvoy.interfaces.IConfigValidator}s of an C{ApiConfigSource}'s
    C{config_validators}, from the extension registry.

    @raise ConfigError: an unknown validator, or a bad config of one.
    """
    from txenvoy.config.context import FactoryContext
    from txenvoy.config.registry import Category, createExtension

    context = FactoryContext(None, None, bootstrap=bootstrap)
    return tuple(createExtension(Category.CONFIG_VALIDATOR, entry, context,
                                 "%s[%d]" % (path, i))
                 for i, entry in enumerate(entries))


class ControlPlanes:
    """
    The transports of one server: the ADS stream, and one per
    C{api_config_source}, made on first use and stopped together.
    """

    def __init__(self, server):
        self._server = server
        self._bootstrap = server.bootstrap
        self._ads = None
        self._adsSource = None
        dynamic = self._bootstrap.dynamic_resources
        if dynamic.HasField("ads_config"):
            self._adsSource = ApiSource(dynamic.ads_config, "dynamic_resources.ads_config",
                                        self._bootstrap)
            if self._adsSource.apiType == REST:
                raise ConfigError("dynamic_resources.ads_config.api_type: ADS must be GRPC or "
                                  "DELTA_GRPC")
        self.transports = []

    def check(self, source, path):
        """Check a control-plane C{ConfigSource} now (raises L{ConfigError})."""
        checkFields(source, _SOURCE_FIELDS, path)
        if source.WhichOneof("config_source_specifier") == "ads":
            if self._adsSource is None:
                raise ConfigError("%s.ads: dynamic_resources.ads_config is not set" % (path,))
            return self._adsSource
        return ApiSource(source.api_config_source, path + ".api_config_source",
                         self._bootstrap)

    def subscription(self, source, path, scope, typeUrl, onUpdate, names=()):
        """
        A L{Subscription} (not started) and its transport.

        @return: C{(subscription, transport)}.
        """
        api = self.check(source, path)
        if source.WhichOneof("config_source_specifier") == "ads":
            if self._ads is None:
                self._ads = self._transport(api, None)
            transport = self._ads
        else:
            transport = self._transport(api, typeUrl)
        freezer = getattr(self._server, "garbageFreezer", None)
        subscription = Subscription(self._server.reactor, scope, typeUrl, onUpdate, names,
                                    initialFetchTimeout(source), transport,
                                    afterUpdate=freezer.schedule if freezer else None)
        return subscription, transport

    def _transport(self, api, typeUrl):
        server = self._server
        scope = server.mainStats.scope("control_plane.")
        if api.apiType == REST:
            from txenvoy.xds.rest_subscription import RestPoller

            transport = RestPoller(server.reactor, server.clusterManager, api.clusterName,
                                   server.node, typeUrl, api.refreshDelay, api.requestTimeout)
        else:
            from txenvoy.xds.grpc_credentials import TUNNEL

            tunnel = api.credentials is TUNNEL
            target = ControlPlaneTarget(server.clusterManager, api.clusterName,
                                        authority=api.authority, metadata=api.metadata,
                                        credentials=None if tunnel else api.credentials,
                                        tlsName=api.tlsName, reactor=server.reactor,
                                        tunnel=tunnel)
            rate = TokenBucket(server.reactor, *api.rateLimit) if api.rateLimit else None
            if typeUrl is None:
                method = DELTA_ADS_METHOD if api.delta else ADS_METHOD
            else:
                method = streamMethod(typeUrl, api.delta)
            cls = GrpcMux
            if api.delta:
                from txenvoy.xds.delta_subscription import DeltaGrpcMux as cls
            transport = cls(server.reactor, target, server.node, scope,
                            setNodeOnFirstMessageOnly=api.setNodeOnFirstMessageOnly,
                            rateLimit=rate, backoff=JitteredBackoff(*api.backoff),
                            method=method, validators=api.validators)
        self.transports.append(transport)
        return transport

    def stop(self):
        for transport in self.transports:
            transport.stop()
