"""
Tests for L{txenvoy.config.checks}: Envoy's cross-reference checks.

Every case was run on Envoy 1.40 (C{--mode validate}); the docstrings say
what it printed or that it accepted the config.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.checks import check
from txenvoy.config.errors import ConfigError

HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
            ".v3.HttpConnectionManager")
ROUTER = ("{name: envoy.filters.http.router, typed_config: "
          "{'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}")


def hcmListener(name, port, route="{cluster: c1}", routeConfigExtra="", listenerExtra="",
                httpFilters=ROUTER):
    """A listener YAML flow mapping with one HTTP connection manager."""
    return (
        "{name: %s, %s address: {socket_address: {address: 127.0.0.1, port_value: %d}}, "
        "filter_chains: [{filters: [{name: hcm, typed_config: {'@type': %s, stat_prefix: s, "
        "route_config: {%s virtual_hosts: [{name: v, domains: ['*'], routes: [{match: "
        "{prefix: /}, route: %s}]}]}, http_filters: [%s]}}]}]}"
        % (name, listenerExtra, port, HCM_TYPE, routeConfigExtra, route, httpFilters))


def tcpListener(name, port, cluster="c1"):
    """A listener YAML flow mapping with one tcp_proxy."""
    return (
        "{name: %s, address: {socket_address: {address: 127.0.0.1, port_value: %d}}, "
        "filter_chains: [{filters: [{name: tcp, typed_config: {'@type': type.googleapis.com/"
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, "
        "cluster: %s}}]}]}" % (name, port, cluster))


class CheckTestMixin:
    """Parse YAML to a Bootstrap (no checks) and run L{check} on it."""

    def bootstrap(self, text):
        from envoy.config.bootstrap.v3 import bootstrap_pb2

        from txenvoy.config.loader import parseDict, parseYaml

        return parseDict(parseYaml(text), bootstrap_pb2.Bootstrap())

    def static(self, listeners=(), clusters="[{name: c1}]", extra=""):
        return self.bootstrap("static_resources: {listeners: [%s], clusters: %s}\n%s"
                              % (", ".join(listeners), clusters, extra))

    def assertCheckError(self, bootstrap, *phrases, **kwargs):
        error = self.assertRaises(ConfigError, check, bootstrap, **kwargs)
        for phrase in phrases:
            self.assertIn(phrase, error.message)
        return error.message


class ClusterTests(CheckTestMixin, SynchronousTestCase):
    """The cluster manager's checks."""

    def test_duplicateCluster(self):
        """
        Envoy: C{cluster manager: duplicate cluster 'c1'}.
        """
        message = self.assertCheckError(
            self.static(clusters="[{name: c1}, {name: c2}, {name: c1}]"),
            "cluster manager: duplicate cluster 'c1'")
        self.assertTrue(message.endswith("@ static_resources.clusters[2]"))

    def test_distinctClusters(self):
        """
        Distinct names pass.
        """
        check(self.static(clusters="[{name: c1}, {name: c2}]"))

    def test_transportSocketWithoutTypedConfig(self):
        """
        Envoy: a cluster C{transport_socket: {name: envoy.transport_sockets.tls}}
        -> C{Didn't find a registered implementation for
        'envoy.transport_sockets.tls' with type URL: ''}.
        """
        self.assertCheckError(
            self.static(clusters="[{name: c1, transport_socket: {name: envoy.transport_sockets.tls}}]"),
            "Didn't find a registered implementation for 'envoy.transport_sockets.tls' "
            "with type URL: ''", "@ static_resources.clusters[0].transport_socket")


class ListenerTests(CheckTestMixin, SynchronousTestCase):
    """The listener manager's checks."""

    def test_missingAddress(self):
        """
        Envoy: C{error adding listener named 'l1': address is necessary}.
        """
        self.assertCheckError(
            self.static(["{name: l1, filter_chains: [{filters: []}]}"]),
            "error adding listener named 'l1': address is necessary",
            "@ static_resources.listeners[0]")

    def test_internalListenerWithoutAddress(self):
        """
        An internal listener needs no address.
        """
        check(self.static(["{name: l1, internal_listener: {}, filter_chains: [{filters: []}]}"]))

    def test_internalListenerWithAddress(self):
        """
        Envoy: C{error adding listener 'l2': address should not be used when
        an internal listener config is provided}.
        """
        self.assertCheckError(
            self.static([hcmListener("l2", 10040, listenerExtra="internal_listener: {},")]),
            "error adding listener 'l2': address should not be used when an internal "
            "listener config is provided")

    def test_duplicateAddress(self):
        """
        Envoy: C{error adding listener: 'l2' has duplicate address
        '127.0.0.1:10040' as existing listener, to check if ...}.
        """
        self.assertCheckError(
            self.static([hcmListener("l1", 10040), hcmListener("l2", 10040)]),
            "error adding listener: 'l2' has duplicate address '127.0.0.1:10040' as existing "
            "listener, to check if the listener has duplicated addresses with other listeners "
            "or 'enable_reuse_port' is set to 'false' for the listener",
            "@ static_resources.listeners[1].address")

    def test_duplicateAddressDespiteOptions(self):
        """
        Envoy reports the clash with C{bind_to_port: false} or
        C{enable_reuse_port: false} as well.
        """
        for extra in ("bind_to_port: false,", "enable_reuse_port: false,"):
            self.assertCheckError(
                self.static([hcmListener("l1", 10040),
                             hcmListener("l2", 10040, listenerExtra=extra)]),
                "duplicate address '127.0.0.1:10040'")

    def test_duplicateAdditionalAddress(self):
        """
        Envoy compares additional addresses too and lists all of the new
        listener's addresses: C{'127.0.0.1:10041,127.0.0.1:10040'}.
        """
        self.assertCheckError(
            self.static([hcmListener("l1", 10040), hcmListener(
                "l2", 10041, listenerExtra="additional_addresses: [{address: {socket_address: "
                "{address: 127.0.0.1, port_value: 10040}}}],")]),
            "'l2' has duplicate address '127.0.0.1:10041,127.0.0.1:10040'")

    def test_sameNameIgnored(self):
        """
        Envoy accepts static listeners with the same name: only the first is
        built, so the later ones are not checked at all (not even for a
        duplicate address).
        """
        check(self.static([hcmListener("l1", 10040), hcmListener("l1", 10041),
                           hcmListener("l1", 10041)]))

    def test_portZero(self):
        """
        Envoy: two listeners on port 0 do not clash.
        """
        check(self.static([hcmListener("l1", 0), hcmListener("l2", 0)]))

    def test_protocolsDiffer(self):
        """
        Envoy: TCP and UDP on the same port do not clash.
        """
        check(self.static([
            hcmListener("l1", 10040),
            "{name: l2, address: {socket_address: {address: 127.0.0.1, port_value: 10040, "
            "protocol: UDP}}}"]))

    def test_ipv6Text(self):
        """
        IPv6 addresses are written in brackets, in their canonical form.
        """
        listener = ("{name: %s, address: {socket_address: {address: '%s', port_value: 10040}}, "
                    "filter_chains: [{filters: []}]}")
        self.assertCheckError(
            self.static([listener % ("a", "::1"), listener % ("b", "0:0::1")]),
            "duplicate address '[::1]:10040'")

    def test_pipes(self):
        """
        Two listeners on the same Unix socket path clash.
        """
        listener = "{name: %s, address: {pipe: {path: /tmp/x.sock}}, filter_chains: [{filters: []}]}"
        self.assertCheckError(self.static([listener % "a", listener % "b"]),
                              "duplicate address '/tmp/x.sock'")


class AddressTests(CheckTestMixin, SynchronousTestCase):
    """Addresses Envoy resolves without DNS must be IP literals."""

    def endpointCluster(self, address, kind=""):
        return ("[{name: a, %s load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: "
                "[{endpoint: {address: {socket_address: {address: '%s', port_value: 1}}}}]}]}}]"
                % (kind, address))

    def test_staticCluster(self):
        """
        Envoy: C{malformed IP address: localhost. Consider setting
        resolver_name or setting cluster type to 'STRICT_DNS' or
        'LOGICAL_DNS'} for a STATIC cluster (the default type).
        """
        for kind in ("", "type: STATIC,"):
            self.assertCheckError(
                self.static(clusters=self.endpointCluster("localhost", kind)),
                "malformed IP address: localhost. Consider setting resolver_name or setting "
                "cluster type to 'STRICT_DNS' or 'LOGICAL_DNS'",
                "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address")

    def test_endpointWithoutAddress(self):
        """
        Envoy: an endpoint of a STATIC cluster without an address ->
        C{Address must be set: ... Consider setting resolver_name or setting
        cluster type to 'STRICT_DNS' or 'LOGICAL_DNS'}, also for an empty
        lb_endpoint; a STRICT_DNS cluster passes validation.
        """
        template = ("[{name: a, type: %s, load_assignment: {cluster_name: a, endpoints: "
                    "[{lb_endpoints: [%s]}]}}]")
        for endpoint in ("{endpoint: {}}", "{}"):
            self.assertCheckError(
                self.static(clusters=template % ("STATIC", endpoint)),
                "Address must be set", "Consider setting resolver_name")
            check(self.static(clusters=template % ("STRICT_DNS", endpoint)))

    def test_dnsCluster(self):
        """
        Envoy: hostnames are fine for STRICT_DNS clusters, and for EDS ones.
        """
        check(self.static(clusters=self.endpointCluster("localhost", "type: STRICT_DNS,")))
        check(self.static(clusters=self.endpointCluster("::1")))

    def test_listenerAndAdmin(self):
        """
        Envoy: C{malformed IP address: localhost} for a listener or the
        admin; C{[::1]} in brackets is malformed too, a scoped IPv6 address
        is fine.
        """
        listener = ("{name: l, address: {socket_address: {address: '%s', port_value: 10040}},"
                    " filter_chains: [{filters: []}]}")
        self.assertCheckError(self.static([listener % "localhost"]),
                              "malformed IP address: localhost")
        self.assertCheckError(self.static([listener % "[::1]"]), "malformed IP address: [::1]")
        check(self.static([listener % "fe80::1%lo"]))
        self.assertCheckError(
            self.bootstrap("admin: {address: {socket_address: {address: localhost, "
                           "port_value: 10090}}}"),
            "malformed IP address: localhost", "@ admin.address")


class FilterChainTests(CheckTestMixin, SynchronousTestCase):
    """The filter chains of one listener."""

    ECHO = ("filters: [{name: e, typed_config: "
            "{'@type': type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}}]")

    def listener(self, chains, extra=""):
        return ("{name: l, %s address: {socket_address: {address: 127.0.0.1, port_value: 10040}},"
                " filter_chains: [%s]}" % (extra, ", ".join(
                    "{name: %s, %s %s}" % (name, match, self.ECHO) for name, match in chains)))

    def test_noFilterChains(self):
        """
        Envoy: C{error adding listener '127.0.0.1:10040': no filter chains
        specified}; an internal listener is named C{envoy://l/}.
        """
        self.assertCheckError(
            self.static(["{name: l, address: {socket_address: {address: 127.0.0.1, "
                         "port_value: 10040}}}"]),
            "error adding listener '127.0.0.1:10040': no filter chains specified")
        self.assertCheckError(
            self.static(["{name: l, internal_listener: {}}"]),
            "error adding listener 'envoy://l/': no filter chains specified")

    def test_noFilterChainsAllowed(self):
        """
        Envoy accepts a UDP listener without filter chains, and a
        default_filter_chain alone.
        """
        check(self.static([
            "{name: u, address: {socket_address: {address: 127.0.0.1, port_value: 10041, "
            "protocol: UDP}}}",
            "{name: d, address: {socket_address: {address: 127.0.0.1, port_value: 10042}}, "
            "default_filter_chain: {%s}}" % (self.ECHO,)]))

    def test_sameMatchingRules(self):
        """
        Envoy: C{filter chain 'b' has the same matching rules defined as 'a'.
        duplicate matcher is: {...}}; no match and an empty match are the
        same.
        """
        self.assertCheckError(
            self.static([self.listener([("a", ""), ("b", "filter_chain_match: {},")])]),
            "error adding listener '127.0.0.1:10040': filter chain 'b' has the same matching "
            "rules defined as 'a'. duplicate matcher is: {}")
        match = "filter_chain_match: {server_names: ['x'], transport_protocol: tls},"
        self.assertCheckError(
            self.static([self.listener([("a", match), ("b", match)])]),
            'duplicate matcher is: {"transport_protocol":"tls","server_names":["x"]}')

    def test_overlappingRules(self):
        """
        Envoy: chains sharing one server name (other criteria equal) ->
        C{multiple filter chains with overlapping matching rules are
        defined}.
        """
        self.assertCheckError(
            self.static([self.listener([
                ("a", "filter_chain_match: {server_names: ['x', 'w']},"),
                ("b", "filter_chain_match: {server_names: ['x']},")])]),
            "error adding listener '127.0.0.1:10040': multiple filter chains with overlapping "
            "matching rules are defined", "filter_chains[1]")

    def test_distinctRules(self):
        """
        Envoy: a port-specific chain and a catch-all chain coexist, as do
        chains for different names or source ranges.
        """
        check(self.static([self.listener([
            ("a", "filter_chain_match: {destination_port: 10040},"),
            ("b", ""),
            ("c", "filter_chain_match: {server_names: ['x']},"),
            ("d", "filter_chain_match: {source_prefix_ranges: [{address_prefix: 10.0.0.0, "
                  "prefix_len: 8}]},"),
        ])]))


class RouteTests(CheckTestMixin, SynchronousTestCase):
    """Cluster names in inline route tables."""

    def test_unknownCluster(self):
        """
        Envoy: C{route: unknown cluster 'nosuch'}.
        """
        self.assertCheckError(
            self.static([hcmListener("l1", 10040, route="{cluster: nosuch}")]),
            "route: unknown cluster 'nosuch'",
            "@ static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
            ".route_config.virtual_hosts[0].routes[0].route.cluster")

    def test_unknownWeightedCluster(self):
        """
        Envoy: C{route: unknown weighted cluster 'nosuch'}.
        """
        self.assertCheckError(
            self.static([hcmListener(
                "l1", 10040, route="{weighted_clusters: {clusters: [{name: c1, weight: 1}, "
                                   "{name: nosuch, weight: 1}]}}")]),
            "route: unknown weighted cluster 'nosuch'", "weighted_clusters.clusters[1].name")

    def test_unknownShadowCluster(self):
        """
        Envoy: C{route: unknown shadow cluster 'nosuch'}.
        """
        self.assertCheckError(
            self.static([hcmListener(
                "l1", 10040, route="{cluster: c1, request_mirror_policies: [{cluster: nosuch}]}")]),
            "route: unknown shadow cluster 'nosuch'")

    def test_validateClustersFalse(self):
        """
        Envoy: C{validate_clusters: false} turns the check off; C{true}
        keeps it.
        """
        check(self.static([hcmListener("l1", 10040, route="{cluster: nosuch}",
                                       routeConfigExtra="validate_clusters: false,")]))
        self.assertCheckError(
            self.static([hcmListener("l1", 10040, route="{cluster: nosuch}",
                                     routeConfigExtra="validate_clusters: true,")]),
            "route: unknown cluster 'nosuch'")

    def test_duplicateDomains(self):
        """
        Envoy: C{Only unique values for domains are permitted. Duplicate
        entry of domain a in route r}, across virtual hosts and regardless
        of case, with or without validate_clusters.
        """
        route = ("{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 1}}, "
                 "filter_chains: [{filters: [{name: h, typed_config: {'@type': %s, "
                 "stat_prefix: s, route_config: {name: r, validate_clusters: false, "
                 "virtual_hosts: [{name: v, domains: ['a']}, {name: w, domains: ['b', 'A']}]}, "
                 "http_filters: [%s]}}]}]}" % (HCM_TYPE, ROUTER))
        self.assertCheckError(
            self.static([route]),
            "Only unique values for domains are permitted. Duplicate entry of domain a in route r",
            "virtual_hosts[1].domains[1]")

    def test_clusterHeader(self):
        """
        Envoy: a C{cluster_header} route is not checked.
        """
        check(self.static([hcmListener("l1", 10040, route="{cluster_header: x}")]))

    def test_tcpProxyUnknownCluster(self):
        """
        Envoy accepts tcp_proxy to an unknown cluster (the connection is
        closed at run time).
        """
        check(self.static([tcpListener("t", 10050, cluster="nosuch")]))

    def test_ignoredDuplicateListenerNotChecked(self):
        """
        The routes of an ignored same-name listener are not checked.
        """
        check(self.static([hcmListener("l1", 10040),
                           hcmListener("l1", 10041, route="{cluster: nosuch}")]))


class TypedConfigTests(CheckTestMixin, SynchronousTestCase):
    """Extensions named without a typed_config."""

    def test_httpFilter(self):
        """
        Envoy 1.40: C{Didn't find a registered implementation for
        'envoy.filters.http.router' with type URL: ''}.
        """
        self.assertCheckError(
            self.static([hcmListener("l1", 10040, httpFilters="{name: envoy.filters.http.router}")]),
            "Didn't find a registered implementation for 'envoy.filters.http.router' "
            "with type URL: ''",
            "@ static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
            ".http_filters[0]")

    def test_optionalHttpFilter(self):
        """
        An optional HTTP filter Envoy cannot find is skipped.
        """
        check(self.static([hcmListener(
            "l1", 10040, httpFilters="{name: x, is_optional: true}, " + ROUTER)]))

    def test_configDiscovery(self):
        """
        A filter configured through discovery has no typed_config, rightly.
        """
        check(self.static([hcmListener(
            "l1", 10040, httpFilters="{name: x, config_discovery: {config_source: {ads: {}}, "
            "type_urls: [type.googleapis.com/envoy.extensions.filters.http.router.v3.Router]}}, "
            + ROUTER)]))

    def test_networkAndListenerFilters(self):
        """
        Network filters and listener filters are checked the same way.
        """
        self.assertCheckError(
            self.static(["{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 1}},"
                         " filter_chains: [{filters: [{name: envoy.filters.network.echo}]}]}"]),
            "'envoy.filters.network.echo' with type URL: ''", "filter_chains[0].filters[0]")
        self.assertCheckError(
            self.static(["{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 1}},"
                         " listener_filters: [{name: envoy.filters.listener.tls_inspector}],"
                         " filter_chains: [{filters: []}]}"]),
            "'envoy.filters.listener.tls_inspector' with type URL: ''", "listener_filters[0]")

    def test_emptyTypedConfig(self):
        """
        Envoy: C{typed_config: {}} names no type either (C{with type URL:
        ''}).
        """
        self.assertCheckError(
            self.static(["{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 1}},"
                         " filter_chains: [{filters: [{name: envoy.filters.network.echo, "
                         "typed_config: {}}]}]}"]),
            "'envoy.filters.network.echo' with type URL: ''")

    def test_emptyPerFilterConfig(self):
        """
        Envoy: an empty C{typed_per_filter_config} entry ->
        C{Didn't find a registered implementation for
        'envoy.filters.http.cors' with type URL: ''}.
        """
        self.assertCheckError(
            self.static([hcmListener(
                "l1", 10040, routeConfigExtra="",
                route="{cluster: c1}, typed_per_filter_config: {envoy.filters.http.cors: {}}")]),
            "'envoy.filters.http.cors' with type URL: ''",
            "routes[0].typed_per_filter_config[envoy.filters.http.cors]")

    def test_resourceMonitor(self):
        """
        Envoy: C{Didn't find a registered implementation for
        'envoy.resource_monitors.fixed_heap' with type URL: ''}; an overload
        action needs no typed_config.
        """
        self.assertCheckError(
            self.bootstrap("overload_manager: {resource_monitors: "
                           "[{name: envoy.resource_monitors.fixed_heap}]}"),
            "'envoy.resource_monitors.fixed_heap' with type URL: ''",
            "@ overload_manager.resource_monitors[0]")
        check(self.bootstrap(
            "overload_manager: {actions: [{name: envoy.overload_actions.stop_accepting_requests,"
            " triggers: [{name: m, threshold: {value: 0.9}}]}]}"))

    def test_accessLogs(self):
        """
        Access logs, the admin's included.
        """
        self.assertCheckError(
            self.bootstrap("admin: {access_log: [{name: envoy.access_loggers.stdout}]}"),
            "'envoy.access_loggers.stdout' with type URL: ''", "@ admin.access_log[0]")


class NodeTests(CheckTestMixin, SynchronousTestCase):
    """Dynamic resources need a node id and cluster."""

    PHRASE = ("node 'id' and 'cluster' are required. Set it either in 'node' config or via "
              "--service-node and --service-cluster options.")

    def test_cdsWithoutNode(self):
        """
        Envoy: C{type.googleapis.com/envoy.config.cluster.v3.Cluster: node
        'id' and 'cluster' are required. ...}.
        """
        self.assertCheckError(
            self.bootstrap("dynamic_resources: {cds_config: {path_config_source: {path: c.yaml}},"
                           " lds_config: {path_config_source: {path: l.yaml}}}"),
            "type.googleapis.com/envoy.config.cluster.v3.Cluster: " + self.PHRASE)

    def test_ldsWithoutNode(self):
        """
        Envoy's serve mode: C{type.googleapis.com/envoy.config.listener.v3.Listener:
        node 'id' and 'cluster' are required}.
        """
        self.assertCheckError(
            self.bootstrap("dynamic_resources: {lds_config: {path_config_source: {path: l.yaml}}}"),
            "type.googleapis.com/envoy.config.listener.v3.Listener: " + self.PHRASE)

    def test_adsWithoutNode(self):
        """
        Envoy: C{ads: node 'id' and 'cluster' are required}.
        """
        self.assertCheckError(
            self.bootstrap("dynamic_resources: {ads_config: {api_type: GRPC, grpc_services: "
                           "[{envoy_grpc: {cluster_name: c1}}]}}"),
            "ads: " + self.PHRASE)

    def test_edsWithoutNode(self):
        """
        Envoy: an EDS cluster ->
        C{type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment:
        node 'id' and 'cluster' are required}.
        """
        self.assertCheckError(
            self.static(clusters="[{name: e, type: EDS, eds_cluster_config: {eds_config: "
                                 "{path_config_source: {path: e.yaml}}}}]"),
            "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment: " + self.PHRASE)

    def test_nodeFromOptions(self):
        """
        --service-node and --service-cluster stand in for the node.
        """
        bootstrap = self.bootstrap(
            "dynamic_resources: {cds_config: {path_config_source: {path: c.yaml}}}")
        check(bootstrap, serviceNode="n", serviceCluster="c")
        self.assertCheckError(bootstrap, "are required", serviceNode="n")

    def test_nodeInConfig(self):
        """
        A node in the config satisfies it.
        """
        check(self.bootstrap(
            "node: {id: n1, cluster: c}\n"
            "dynamic_resources: {cds_config: {path_config_source: {path: c.yaml}}}"))

    def test_staticNeedsNoNode(self):
        """
        A purely static config needs no node.
        """
        check(self.static([hcmListener("l1", 10040)]))
