# -*- test-case-name: tests.e2e.test_configs -*-
"""
Envoy configs for end-to-end tests, written from the parts a test is about.

Most end-to-end tests run the same bootstrap: an admin on 127.0.0.1, one
or a few static listeners whose one filter chain is an
C{http_connection_manager} (a virtual host for every domain, some HTTP
filters, the router last) and static clusters of one endpoint each. The
functions here write that skeleton once. A test passes what is its own
(routes, HTTP filters, extra fields) as YAML text and gets real Envoy
YAML text back, so that the config a test runs stays readable as Envoy
YAML and runs unchanged in Envoy and in txenvoy.

Ports are written with C{%s}: pass a number, or a placeholder such as
C{"%(main)d"} that the test fills later with C{config % ports}. The
fragments are not formatted here, so a fragment's own C{%%} and
C{%(name)d} are left for that same later C{%}.
"""

import textwrap

ROUTER = """
- name: envoy.filters.http.router
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""

#: Cluster fields: HTTP/2 to its hosts (a gRPC service).
HTTP2 = """
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: {http2_protocol_options: {}}
"""

TO_ORIGIN = """
- match: { prefix: "/" }
  route: { cluster: origin }
"""


def block(text, indent):
    """
    C{text} (YAML, at any indentation) dedented, then indented by
    C{indent} spaces, ending in a newline; C{""} for no text.
    """
    text = textwrap.dedent(text).strip("\n")
    if not text:
        return ""
    return textwrap.indent(text, " " * indent) + "\n"


def bootstrap(listeners=(), clusters=(), admin="%(admin)d", extra=""):
    """
    A bootstrap: the admin on 127.0.0.1:C{admin} (none if C{None}), the
    static C{listeners} and C{clusters} (YAML list items, as L{httpListener}
    and L{cluster} write them), then C{extra} top-level fields.
    """
    out = ""
    if admin is not None:
        out += ("admin:\n  address:\n"
                "    socket_address: { address: 127.0.0.1, port_value: %s }\n" % (admin,))
    out += "static_resources:\n"
    if listeners:
        out += "  listeners:\n" + "".join(block(item, 2) for item in listeners)
    if clusters:
        out += "  clusters:\n" + "".join(block(item, 2) for item in clusters)
    return out + block(extra, 0)


def _joined(items):
    """YAML list items given as one text or as a list of texts: one text."""
    if isinstance(items, str):
        return items
    return "".join(block(item, 0) for item in items)


def httpListener(name, port, routes=TO_ORIGIN, httpFilters="", statPrefix=None,
                 hcm="", virtualHost="", virtualHosts=None, routeConfig="", router="",
                 filterChain="", listener=""):
    """
    A listener C{name} (none if C{None}) on 127.0.0.1:C{port} whose one
    filter chain is an C{http_connection_manager} (C{stat_prefix}
    C{statPrefix}, else C{name}):
    its C{route_config} has one virtual host C{all} for every domain with
    C{routes}; its C{http_filters} are C{httpFilters}, then the router.
    C{routes} and C{httpFilters} are YAML list items, the other parts YAML
    fields; each is one text or a list of texts (such as L{httpFilter}
    writes).

    @param hcm: more fields of the connection manager.
    @param virtualHost: more fields of the virtual host C{all}.
    @param virtualHosts: the whole list of virtual hosts, in place of C{all}.
    @param routeConfig: more fields of the C{route_config}.
    @param router: fields of the router's C{typed_config}, beside its type;
        C{False} for no router.
    @param filterChain: more fields of the filter chain.
    @param listener: more fields of the listener.
    """
    httpFilters, routes = _joined(httpFilters), _joined(routes)
    hcm, virtualHost, routeConfig = _joined(hcm), _joined(virtualHost), _joined(routeConfig)
    filterChain, listener = _joined(filterChain), _joined(listener)
    if router is False:
        filters = block(httpFilters, 8) or "          []\n"
    else:
        filters = block(httpFilters, 8) + block(ROUTER, 8) + block(_joined(router), 12)
    if virtualHosts is not None:
        virtualHosts = _joined(virtualHosts)
    else:
        virtualHosts = ("- name: all\n  domains: [\"*\"]\n" + block(virtualHost, 2)
                        + "  routes:\n" + block(routes, 2))
    head = "- " if name is None else "- name: %s\n  " % (name,)
    return (
        head + "address:\n"
        "    socket_address: { address: 127.0.0.1, port_value: %s }\n" % (port,)
        + block(listener, 2)
        + "  filter_chains:\n"
        "  - filters:\n"
        "    - name: envoy.filters.network.http_connection_manager\n"
        "      typed_config:\n"
        "        \"@type\": type.googleapis.com/envoy.extensions.filters.network"
        ".http_connection_manager.v3.HttpConnectionManager\n"
        "        stat_prefix: %s\n" % (statPrefix or name,)
        + block(hcm, 8)
        + "        route_config:\n"
        + block(routeConfig, 10)
        + "          virtual_hosts:\n"
        + block(virtualHosts, 10)
        + "        http_filters:\n"
        + filters
        + block(filterChain, 4))


def httpFilter(name, typeName, config=""):
    """
    An C{http_filters} item: the filter C{name} whose C{typed_config} is a
    C{typeName} (a proto's full name) with the fields C{config}.
    """
    return ("- name: %s\n  typed_config:\n    \"@type\": type.googleapis.com/%s\n"
            % (name, typeName) + block(config, 4))


def cluster(name, port=None, extra="", connectTimeout="1s"):
    """
    A static cluster C{name} of one endpoint, 127.0.0.1:C{port} (by default
    the placeholder C{%(name)d}; a list of ports for one endpoint each),
    with C{extra} more cluster fields; no
    C{connect_timeout} if C{connectTimeout} is C{None}.
    """
    if port is None:
        port = "%%(%s)d" % (name,)
    ports = port if isinstance(port, (list, tuple)) else [port]
    out = "- name: %s\n" % (name,)
    if connectTimeout is not None:
        out += "  connect_timeout: %s\n" % (connectTimeout,)
    return (
        out
        + block(_joined(extra), 2)
        + "  load_assignment:\n"
        "    cluster_name: %s\n"
        "    endpoints:\n"
        "    - lb_endpoints:\n" % (name,)
        + "".join("      - endpoint: { address: { socket_address:"
                  " { address: 127.0.0.1, port_value: %s } } }\n" % (p,) for p in ports))
