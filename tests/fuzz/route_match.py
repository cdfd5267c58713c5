"""
Fuzz target: route matching (L{txenvoy.router.config}).

Two route configurations using every kind of domain, path, header, query
parameter and gRPC match, weighted and header-named clusters, redirects,
direct responses, path and host rewrites and formatted header mutations
are compiled once, as the config loader compiles them. Each input is a
request: its first bytes choose the table, the method and whether the
host's port is stripped; the rest is C{authority}, C{path} and header
lines, separated by C{\\n} (a header line is C{name:value}). The request
goes through L{RouteTable.route} as the connection manager calls it, and
what the router then asks of a match (cluster name, host and path
rewrites, redirect location, header mutations) is asked too.

Accepted: C{None} (Envoy's 404 C{NR}) or a L{RouteMatch}. There is no
rejection at this stage: anything raised is a crash.
"""

import yaml
from twisted.internet.task import Clock

from tests.fuzz.support import FuzzInput, check
from txenvoy.config.loader import parseDict
from txenvoy.http.header_mutation import FormatContext
from txenvoy.http.headers import HeaderMap, RequestHeaders, ResponseHeaders
from txenvoy.router.config import RouteMatch, RouteTable
from txenvoy.network.stream_info import StreamInfo

_ROUTES = """
name: fuzz
request_headers_to_add:
- header: {key: x-table, value: "%REQ(:PATH)%"}
response_headers_to_add:
- header: {key: x-route, value: "%ROUTE_NAME%"}
internal_only_headers: [x-internal]
virtual_hosts:
- name: exact
  domains: [exact.test, "exact.test:8080", "[::1]:80"]
  require_tls: EXTERNAL_ONLY
  routes:
  - name: tls
    match: {prefix: /}
    route: {cluster: a}
- name: suffix
  domains: ["*.suffix.test", "*-bar.suffix.test"]
  request_headers_to_add:
  - header: {key: x-vh, value: "%REQ(HOST)% %DOWNSTREAM_REMOTE_ADDRESS%"}
    append_action: OVERWRITE_IF_EXISTS_OR_ADD
  routes:
  - name: regex
    match:
      safe_regex: {regex: "/r/([a-z]+)/(\\\\d+)"}
    route:
      cluster: a
      regex_rewrite:
        pattern: {regex: "^/r/([a-z]+)/(\\\\d+)$"}
        substitution: "/\\\\2/\\\\1"
  - name: weighted
    match: {prefix: /w, case_sensitive: false}
    route:
      weighted_clusters:
        clusters:
        - {name: a, weight: 30}
        - {name: b, weight: 70, host_rewrite_literal: b.test}
        - {name: c, weight: 1, cluster_header: x-cluster}
  - name: grpc
    match: {prefix: /svc., grpc: {}}
    route: {cluster: b, timeout: 5s}
- name: prefix
  domains: ["prefix.*", "api.prefix.test:*"]
  routes:
  - name: separated
    match: {path_separated_prefix: /api}
    route: {cluster: a, prefix_rewrite: /v2, host_rewrite_header: x-host}
  - name: exactpath
    match: {path: /Exact, case_sensitive: false}
    route: {cluster: b, host_rewrite_path_regex: {pattern: {regex: "^/(.+)$"},
            substitution: "\\\\1"}}
  - name: headers
    match:
      prefix: /h
      headers:
      - {name: x-exact, string_match: {exact: v}}
      - {name: x-range, range_match: {start: -10, end: 10}, invert_match: true}
      - {name: x-re, safe_regex_match: {regex: "a+b*"}, treat_missing_header_as_empty: true}
      - {name: ":method", string_match: {prefix: G}}
      - {name: x-present, present_match: true}
      - {name: x-contains, string_match: {contains: Mid, ignore_case: true}}
    route: {cluster_header: x-cluster}
  - name: query
    match:
      prefix: /q
      query_parameters:
      - {name: a, string_match: {exact: "1"}}
      - {name: b, present_match: true}
      - {name: c, string_match: {safe_regex: {regex: "[0-9]+"}}}
    route: {cluster: a, auto_host_rewrite: true}
- name: default
  domains: ["*"]
  routes:
  - name: redirect
    match: {prefix: /redirect}
    redirect: {https_redirect: true, host_redirect: r.test, port_redirect: 8443,
               prefix_rewrite: /new, strip_query: true, response_code: PERMANENT_REDIRECT}
  - name: regexredirect
    match: {prefix: /rr}
    redirect:
      scheme_redirect: ftp
      regex_rewrite: {pattern: {regex: "^/rr(.*)$"}, substitution: "/x\\\\1"}
  - name: pathredirect
    match: {path: /pr}
    redirect: {path_redirect: "/p?x=1"}
  - name: direct
    match: {prefix: /direct}
    direct_response: {status: 201, body: {inline_string: made}}
    response_headers_to_add:
    - header: {key: x-dr, value: "%RESPONSE_CODE%"}
  - name: any
    match: {prefix: /}
    route: {cluster: c, prefix_rewrite: /}
"""

_OPTIONS = """
ignore_port_in_host_matching: true
ignore_path_parameters_in_path_matching: true
most_specific_header_mutations_wins: true
"""

_METHODS = (b"GET", b"POST", b"HEAD", b"CONNECT", b"OPTIONS", b"PUT", b"DELETE", b"G")


def _compile(text):
    from envoy.config.route.v3 import route_pb2

    message = parseDict(yaml.safe_load(text), route_pb2.RouteConfiguration())
    return RouteTable.fromProto(message, "route_config", {"a", "b", "c"}, rng=lambda: 0.5)


_tables = []


def _tablesBuilt():
    if not _tables:
        _tables.append(_compile(_ROUTES))
        _tables.append(_compile(_ROUTES + _OPTIONS))
    return _tables


def testOneInput(data):
    """Route the request C{data} describes; raise for anything but a route or None."""
    tables = _tablesBuilt()
    inp = FuzzInput(data)
    flags = inp.byte()
    table = tables[flags & 1]
    method = _METHODS[(flags >> 1) & 7]
    lines = inp.rest().split(b"\n")
    authority = lines[0] if not flags & 0x20 else None
    path = lines[1] if len(lines) > 1 else b"/"
    headers = HeaderMap()
    for line in lines[2:]:
        name, _, value = line.partition(b":")
        headers.add(name.lower(), value.strip())
    request = RequestHeaders(method, path, authority, headers=headers)
    match = table.route(authority, path, headers, method, stripAnyHostPort=bool(flags & 0x10))
    if match is None:
        return
    check(isinstance(match, RouteMatch), "route returned %r", match)
    entry = match.entry
    clock = Clock()
    info = StreamInfo(clock, wallTime=clock.seconds)
    info.downstreamRemoteAddress = ("10.0.0.1", 5555)
    info.routeName = entry.name
    if entry.isDirectResponse:
        if entry.addsLocation:
            scheme = b"https" if flags & 0x40 else b"http"
            location = match.redirectLocation(scheme, authority, path or b"/",
                                              headers.get(b"x-forwarded-proto") or scheme)
            check(isinstance(location, bytes), "location %r", location)
        response = ResponseHeaders(entry.responseCode)
        if match.responseHeadersMutations:
            match.responseHeadersMutations.apply(
                response.headers, FormatContext(info, request, response))
        return
    name = match.clusterName
    check(name is None or isinstance(name, str), "cluster name %r", name)
    if match.requestHeadersMutations:
        match.requestHeadersMutations.apply(headers, FormatContext(info, request, None))
    host = match.rewriteHost(headers, path)
    check(host is None or isinstance(host, bytes), "host rewrite %r", host)
    newPath = entry.rewritePath(path)
    check(isinstance(newPath, bytes), "path rewrite %r", newPath)
