"""
Tests for L{txenvoy.router.config} and L{txenvoy.router.matcher}.

Behaviours marked "Envoy 1.40" were checked against the binary with
C{direct_response} routes and curl.
"""

import os
import weakref

import yaml
from google.protobuf import json_format
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.router.matcher import (
    compileStringMatcher,
    parseQueryParameters,
)
from txenvoy.router.config import (
    DEFAULT_RETRY_POLICY,
    RouteMatch,
    RouteTable,
    getPortStart,
)

EXAMPLES = "/work/shared/envoy-examples"


class FakeHeaders:
    """
    A request header map: ordered C{(name, value)} pairs with lower-case
    names, and the methods the route table and mutations use.
    """

    def __init__(self, *pairs, **simple):
        self.entries = list(pairs)
        for name, value in simple.items():
            self.entries.append((name.replace("_", "-").encode(), value))

    def get(self, name):
        for n, v in self.entries:
            if n == name:
                return v
        return None

    def getAll(self, name):
        return [v for n, v in self.entries if n == name]

    def add(self, name, value):
        self.entries.append((name, value))

    def set(self, name, value):
        self.remove(name)
        self.entries.append((name, value))

    def remove(self, name):
        self.entries = [(n, v) for n, v in self.entries if n != name]


def _config(text):
    """A C{RouteConfiguration} from Envoy YAML."""
    return json_format.ParseDict(yaml.safe_load(text), route_pb2.RouteConfiguration())


def _table(text, knownClusters=None, rng=lambda: 0.5):
    return RouteTable.fromProto(_config(text), "rc", knownClusters, rng)


def _oneHost(routes, extra=""):
    """A table with one catch-all virtual host and the given routes (YAML)."""
    return _table("""
name: t
%s
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
%s
""" % (extra, "\n".join("  " + line for line in routes.strip().splitlines())))


def _route(table, path, authority=b"example.com", headers=None, method=b"GET", **kw):
    return table.route(authority, path, headers if headers is not None else FakeHeaders(),
                       method, **kw)


def _name(match):
    """The matched route's name, or None."""
    return None if match is None else match.entry.name


def _hcmRouteConfig(filename, listener=0):
    with open(os.path.join(EXAMPLES, filename)) as f:
        doc = yaml.safe_load(f)
    typed = doc["static_resources"]["listeners"][listener]["filter_chains"][0][
        "filters"][0]["typed_config"]
    # Only the route table: the rest of the connection manager is not
    # this module's business.
    hcm = json_format.ParseDict({"route_config": typed["route_config"]},
                                http_connection_manager_pb2.HttpConnectionManager())
    clusters = {c["name"] for c in doc["static_resources"]["clusters"]}
    return hcm.route_config, clusters


DOMAINS = """
name: domains
virtual_hosts:
- {name: exact, domains: ["foo.example.com"], routes: [{name: r, match: {prefix: "/"}, direct_response: {status: 200}}]}
- {name: suffix, domains: ["*.example.com"], routes: [{name: r, match: {prefix: "/"}, direct_response: {status: 200}}]}
- {name: longsuffix, domains: ["*-bar.example.com"], routes: [{name: r, match: {prefix: "/"}, direct_response: {status: 200}}]}
- {name: prefix, domains: ["foo.*"], routes: [{name: r, match: {prefix: "/"}, direct_response: {status: 200}}]}
- {name: longprefix, domains: ["foo.bar.*"], routes: [{name: r, match: {prefix: "/"}, direct_response: {status: 200}}]}
- {name: port, domains: ["api.example.org", "api.example.org:*"], routes: [{name: r, match: {prefix: "/"}, direct_response: {status: 200}}]}
- {name: bare, domains: ["a.example.net"], routes: [{name: r, match: {prefix: "/"}, direct_response: {status: 200}}]}
- {name: default, domains: ["*"], routes: [{name: r, match: {prefix: "/"}, direct_response: {status: 200}}]}
"""


class VirtualHostSelectionTests(SynchronousTestCase):
    """
    Domain matching as Envoy's C{RouteMatcher::findVirtualHost} does it.
    """

    def setUp(self):
        self.table = _table(DOMAINS)

    def vhost(self, authority, **kw):
        match = _route(self.table, b"/", authority, **kw)
        return None if match is None else match.virtualHost.name

    def test_precedence(self):
        """
        Exact beats suffix wildcard beats prefix wildcard beats C{*}.
        """
        self.assertEqual(self.vhost(b"foo.example.com"), "exact")
        self.assertEqual(self.vhost(b"x.example.com"), "suffix")
        self.assertEqual(self.vhost(b"foo.example.net"), "prefix")
        self.assertEqual(self.vhost(b"other.net"), "default")

    def test_longestWildcardWins(self):
        """
        The longest suffix (C{*-bar.example.com} over C{*.example.com}) and
        the longest prefix (C{foo.bar.*} over C{foo.*}) win.
        """
        self.assertEqual(self.vhost(b"baz-bar.example.com"), "longsuffix")
        self.assertEqual(self.vhost(b"foo.bar.net"), "longprefix")

    def test_suffixNeedsSomethingBeforeIt(self):
        """
        C{*.example.com} does not match C{example.com} nor C{.example.com}
        (Envoy 1.40).
        """
        self.assertEqual(self.vhost(b"example.com"), "default")
        self.assertEqual(self.vhost(b".example.com"), "default")

    def test_caseInsensitive(self):
        """
        Host matching ignores case (Envoy 1.40: C{A.EXAMPLE.COM} matched).
        """
        self.assertEqual(self.vhost(b"FOO.Example.COM"), "exact")
        self.assertEqual(self.vhost(b"X.EXAMPLE.COM"), "suffix")

    def test_portDoesNotMatchBareDomain(self):
        """
        A Host with a port does not match a bare domain (Envoy 1.40:
        C{a.example.com:8080} against C{[a.example.com]} gave 404).
        """
        self.assertEqual(self.vhost(b"a.example.net"), "bare")
        self.assertEqual(self.vhost(b"a.example.net:8080"), "default")

    def test_anyPortDomain(self):
        """
        C{api.example.org:*} is a prefix wildcard that matches any port
        (Envoy 1.40).
        """
        self.assertEqual(self.vhost(b"api.example.org:8080"), "port")
        self.assertEqual(self.vhost(b"API.example.org:1"), "port")
        self.assertEqual(self.vhost(b"api.example.org"), "port")

    def test_stripAnyHostPort(self):
        """
        With C{stripAnyHostPort} the port is dropped before matching.
        """
        self.assertEqual(self.vhost(b"a.example.net:8080", stripAnyHostPort=True), "bare")

    def test_ignorePortInHostMatching(self):
        """
        C{ignore_port_in_host_matching} drops the port for domain matching.
        """
        table = _table(DOMAINS + "ignore_port_in_host_matching: true\n")
        self.assertEqual(table.route(b"a.example.net:8080", b"/", FakeHeaders(),
                                     b"GET").virtualHost.name, "bare")

    def test_portStart(self):
        """
        Envoy's C{getPortStart}: IPv6 literals keep their colons.
        """
        self.assertEqual(getPortStart(b"a.com:80"), 5)
        self.assertEqual(getPortStart(b"a.com"), -1)
        self.assertEqual(getPortStart(b"[::1]"), -1)
        self.assertEqual(getPortStart(b"[::1]:80"), 5)

    def test_noAuthority(self):
        """
        Without an authority no virtual host matches, unless the table only
        has a default one.
        """
        self.assertIsNone(self.vhost(None))
        table = _oneHost('- {name: r, match: {prefix: "/"}, direct_response: {status: 200}}')
        self.assertEqual(_name(table.route(None, b"/", FakeHeaders(), b"GET")), "r")

    def test_noMatch(self):
        """
        Without a C{*} domain an unknown Host finds nothing.
        """
        table = _table("""
virtual_hosts:
- {name: a, domains: ["a.com"], routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]}
""")
        self.assertIsNone(table.route(b"b.com", b"/", FakeHeaders(), b"GET"))

    def test_cacheIsBounded(self):
        """
        The per-Host cache stays bounded and keeps answering correctly.
        """
        for i in range(3000):
            self.vhost(b"h%d.example.com" % (i,))
        self.assertLessEqual(len(self.table._vhostCache), 1024)
        self.assertEqual(self.vhost(b"foo.example.com"), "exact")

    def test_duplicateDomain(self):
        """
        A domain in two virtual hosts (in any case) is Envoy's error.
        """
        error = self.assertRaises(ConfigError, _table, """
name: rc1
virtual_hosts:
- {name: a, domains: ["A.example.com"], routes: []}
- {name: b, domains: ["a.example.com"], routes: []}
""")
        self.assertEqual(str(error), "Only unique values for domains are permitted. Duplicate "
                                     "entry of domain a.example.com in route rc1 "
                                     "@ rc.virtual_hosts[1].domains[0]")

    def test_duplicateWildcard(self):
        """
        Two C{*} domains and duplicate suffix wildcards are Envoy's errors.
        """
        error = self.assertRaises(ConfigError, _table, """
name: rc1
virtual_hosts:
- {name: a, domains: ["*"], routes: []}
- {name: b, domains: ["*"], routes: []}
""")
        self.assertTrue(str(error).startswith(
            "Only a single wildcard domain is permitted in route rc1"))
        error = self.assertRaises(ConfigError, _table, """
name: rc1
virtual_hosts:
- {name: a, domains: ["*.x.com"], routes: []}
- {name: b, domains: ["*.x.com"], routes: []}
""")
        self.assertIn("Duplicate entry of domain *.x.com in route rc1", str(error))


PATHS = """
- {name: prefix, match: {prefix: "/p/"}, direct_response: {status: 200}}
- {name: exact, match: {path: "/exact"}, direct_response: {status: 200}}
- {name: regex, match: {safe_regex: {regex: "/users/[0-9]+"}}, direct_response: {status: 200}}
- {name: separated, match: {path_separated_prefix: "/sep"}, direct_response: {status: 200}}
- {name: ci-prefix, match: {prefix: "/ci/", case_sensitive: false}, direct_response: {status: 200}}
- {name: ci-exact, match: {path: "/CiExact", case_sensitive: false}, direct_response: {status: 200}}
- {name: ci-sep, match: {path_separated_prefix: "/CiSep", case_sensitive: false}, direct_response: {status: 200}}
- {name: ci-regex, match: {safe_regex: {regex: "/rx"}, case_sensitive: false}, direct_response: {status: 200}}
- {name: query-prefix, match: {prefix: "/q?"}, direct_response: {status: 200}}
"""


class PathMatchTests(SynchronousTestCase):
    """
    Each path specifier, matched against the path without its query.
    """

    def setUp(self):
        self.table = _oneHost(PATHS)

    def name(self, path):
        return _name(_route(self.table, path))

    def test_prefix(self):
        """
        C{prefix} is case-sensitive by default.
        """
        self.assertEqual(self.name(b"/p/x?y=1"), "prefix")
        self.assertEqual(self.name(b"/p/"), "prefix")
        self.assertIsNone(self.name(b"/P/x"))
        self.assertIsNone(self.name(b"/p"))

    def test_exactPath(self):
        """
        C{path} matches the whole path, whatever the query or fragment.
        """
        self.assertEqual(self.name(b"/exact"), "exact")
        self.assertEqual(self.name(b"/exact?x=1"), "exact")
        self.assertEqual(self.name(b"/exact#frag"), "exact")
        self.assertIsNone(self.name(b"/exact/"))
        self.assertIsNone(self.name(b"/exactly"))
        self.assertIsNone(self.name(b"/EXACT"))

    def test_safeRegexFullMatch(self):
        """
        C{safe_regex} must match the whole path, query excluded.
        """
        self.assertEqual(self.name(b"/users/42"), "regex")
        self.assertEqual(self.name(b"/users/42?x=y"), "regex")
        self.assertIsNone(self.name(b"/users/42/x"))
        self.assertIsNone(self.name(b"/x/users/42"))

    def test_pathSeparatedPrefix(self):
        """
        C{path_separated_prefix} matches the prefix followed by C{/}, the
        end, or the query (Envoy 1.40: C{/psp} and C{/psp/a} matched,
        C{/pspx} did not).
        """
        self.assertEqual(self.name(b"/sep"), "separated")
        self.assertEqual(self.name(b"/sep/a"), "separated")
        self.assertEqual(self.name(b"/sep?x"), "separated")
        self.assertIsNone(self.name(b"/sepx"))

    def test_caseInsensitive(self):
        """
        C{case_sensitive: false} applies to prefix, path and
        path_separated_prefix.
        """
        self.assertEqual(self.name(b"/CI/x"), "ci-prefix")
        self.assertEqual(self.name(b"/ciexact?q"), "ci-exact")
        self.assertEqual(self.name(b"/cisep/a"), "ci-sep")
        self.assertIsNone(self.name(b"/cisepx"))

    def test_regexOnPathBytes(self):
        """
        A regex route reads the path's bytes as Latin-1 and ignores the
        query, as Envoy 1.40 does.
        """
        table = _oneHost('- {name: r, match: {safe_regex: {regex: "/caf."}}, '
                         'direct_response: {status: 200}}')
        self.assertEqual(_name(_route(table, b"/caf\xe9")), "r")
        self.assertEqual(_name(_route(table, b"/cafe?x")), "r")
        self.assertIsNone(_route(table, "/café".encode()))

    def test_caseSensitiveDoesNotApplyToRegex(self):
        """
        C{case_sensitive} does not change a regex.
        """
        self.assertEqual(self.name(b"/rx"), "ci-regex")
        self.assertIsNone(self.name(b"/RX"))

    def test_queryInPatternNeverMatches(self):
        """
        A prefix containing C{?} cannot match, since Envoy matches the path
        without its query.
        """
        self.assertIsNone(self.name(b"/q?x=1"))

    def test_firstMatchWins(self):
        """
        Routes are tried in order.
        """
        table = _oneHost("""
- {name: first, match: {prefix: "/a"}, direct_response: {status: 200}}
- {name: second, match: {prefix: "/a/b"}, direct_response: {status: 200}}
""")
        self.assertEqual(_name(_route(table, b"/a/b")), "first")

    def test_ignorePathParameters(self):
        """
        C{ignore_path_parameters_in_path_matching} drops C{;params} before
        matching.
        """
        table = _oneHost('- {name: e, match: {path: "/a"}, direct_response: {status: 200}}',
                         "ignore_path_parameters_in_path_matching: true")
        self.assertEqual(_name(_route(table, b"/a;jsessionid=1")), "e")
        self.assertIsNone(_route(self.table, b"/exact;x"))

    def test_noPath(self):
        """
        A request without a path (CONNECT) matches no route.
        """
        self.assertIsNone(_route(self.table, None))

    def test_missingPathSpecifier(self):
        """
        A route match without a path specifier is an error.
        """
        error = self.assertRaises(ConfigError, _oneHost,
                                  '- {match: {headers: [{name: x}]}, direct_response: {status: 200}}')
        self.assertIn("rc.virtual_hosts[0].routes[0].match", str(error))


HEADERS = """
- {name: exact, match: {prefix: "/exact", headers: [{name: x-h, string_match: {exact: "a"}}]}, direct_response: {status: 200}}
- {name: exact-multi, match: {prefix: "/joined", headers: [{name: x-h, string_match: {exact: "a,b"}}]}, direct_response: {status: 200}}
- {name: invert, match: {prefix: "/invert", headers: [{name: x-h, string_match: {exact: "x"}, invert_match: true}]}, direct_response: {status: 200}}
- {name: absent, match: {prefix: "/absent", headers: [{name: x-h, present_match: false}]}, direct_response: {status: 200}}
- {name: present, match: {prefix: "/present", headers: [{name: x-h, present_match: true}]}, direct_response: {status: 200}}
- {name: present-invert, match: {prefix: "/presinv", headers: [{name: x-h, present_match: true, invert_match: true}]}, direct_response: {status: 200}}
- {name: bare-name, match: {prefix: "/bare", headers: [{name: x-h}]}, direct_response: {status: 200}}
- {name: missing-empty, match: {prefix: "/empty", headers: [{name: x-h, string_match: {exact: ""}, treat_missing_header_as_empty: true}]}, direct_response: {status: 200}}
- {name: range, match: {prefix: "/range", headers: [{name: x-h, range_match: {start: 5, end: 7}}]}, direct_response: {status: 200}}
- {name: old-exact, match: {prefix: "/old", headers: [{name: x-h, exact_match: "v"}]}, direct_response: {status: 200}}
- {name: old-prefix, match: {prefix: "/oldp", headers: [{name: x-h, prefix_match: "ab"}]}, direct_response: {status: 200}}
- {name: old-suffix, match: {prefix: "/olds", headers: [{name: x-h, suffix_match: "yz"}]}, direct_response: {status: 200}}
- {name: old-contains, match: {prefix: "/oldc", headers: [{name: x-h, contains_match: "mid"}]}, direct_response: {status: 200}}
- {name: old-regex, match: {prefix: "/oldr", headers: [{name: x-h, safe_regex_match: {regex: "[0-9]+"}}]}, direct_response: {status: 200}}
- {name: old-empty, match: {prefix: "/oe", headers: [{name: x-h, exact_match: ""}]}, direct_response: {status: 200}}
- {name: absent-empty, match: {prefix: "/ae", headers: [{name: x-h, present_match: false, treat_missing_header_as_empty: true}]}, direct_response: {status: 200}}
- {name: invert-empty, match: {prefix: "/ie", headers: [{name: x-h, string_match: {exact: "a"}, invert_match: true, treat_missing_header_as_empty: true}]}, direct_response: {status: 200}}
- {name: method, match: {prefix: "/method", headers: [{name: ":method", string_match: {exact: "POST"}}]}, direct_response: {status: 200}}
- {name: authority, match: {prefix: "/auth", headers: [{name: ":authority", string_match: {exact: "h.com:8080"}}]}, direct_response: {status: 200}}
- {name: host, match: {prefix: "/host", headers: [{name: "host", present_match: true}]}, direct_response: {status: 200}}
- {name: path, match: {prefix: "/path", headers: [{name: ":path", string_match: {exact: "/path?x=1"}}]}, direct_response: {status: 200}}
- {name: scheme, match: {prefix: "/scheme", headers: [{name: ":scheme", string_match: {exact: "http"}}]}, direct_response: {status: 200}}
- {name: grpc, match: {prefix: "/grpc", grpc: {}}, direct_response: {status: 200}}
- {name: all, match: {prefix: "/all", headers: [{name: x-a, present_match: true}, {name: x-b, present_match: true}]}, direct_response: {status: 200}}
"""


class HeaderMatchTests(SynchronousTestCase):
    """
    Route C{headers} conditions.
    """

    def setUp(self):
        self.table = _oneHost(HEADERS)

    def name(self, path, *pairs, **kw):
        return _name(_route(self.table, path, headers=FakeHeaders(*pairs), **kw))

    def test_exact(self):
        """
        C{string_match.exact} compares the whole value.
        """
        self.assertEqual(self.name(b"/exact", (b"x-h", b"a")), "exact")
        self.assertIsNone(self.name(b"/exact", (b"x-h", b"ab")))
        self.assertIsNone(self.name(b"/exact"))

    def test_multipleValuesMatchOneByOne(self):
        """
        A header sent on several lines matches when any one value matches;
        the values are not joined (Envoy 1.40: C{exact: a} and C{exact: b}
        matched C{x-h: a} + C{x-h: b}, C{exact: "a,b"} did not, and an
        inverted C{exact: a} did not match).
        """
        self.assertEqual(self.name(b"/exact", (b"x-h", b"b"), (b"x-h", b"a")), "exact")
        self.assertIsNone(self.name(b"/joined", (b"x-h", b"a"), (b"x-h", b"b")))
        self.assertEqual(self.name(b"/joined", (b"x-h", b"a,b")), "exact-multi")
        self.assertIsNone(self.name(b"/invert", (b"x-h", b"y"), (b"x-h", b"x")))
        self.assertEqual(self.name(b"/range", (b"x-h", b"a"), (b"x-h", b"6")), "range")

    def test_invertMissing(self):
        """
        An inverted matcher does not match a missing header (Envoy 1.40).
        """
        self.assertEqual(self.name(b"/invert", (b"x-h", b"y")), "invert")
        self.assertIsNone(self.name(b"/invert", (b"x-h", b"x")))
        self.assertIsNone(self.name(b"/invert"))

    def test_presence(self):
        """
        C{present_match: false} matches a missing header, an inverted
        C{present_match: true} too, and an empty value counts as present
        (Envoy 1.40).
        """
        self.assertEqual(self.name(b"/absent"), "absent")
        self.assertIsNone(self.name(b"/absent", (b"x-h", b"")))
        self.assertEqual(self.name(b"/present", (b"x-h", b"")), "present")
        self.assertIsNone(self.name(b"/present"))
        self.assertEqual(self.name(b"/presinv"), "present-invert")
        self.assertIsNone(self.name(b"/presinv", (b"x-h", b"1")))
        self.assertEqual(self.name(b"/bare", (b"x-h", b"1")), "bare-name")
        self.assertIsNone(self.name(b"/bare"))

    def test_treatMissingAsEmpty(self):
        """
        C{treat_missing_header_as_empty} matches a missing header as C{""}.
        """
        self.assertEqual(self.name(b"/empty"), "missing-empty")
        self.assertIsNone(self.name(b"/empty", (b"x-h", b"v")))

    def test_missingAsEmptyCombinations(self):
        """
        An empty deprecated C{exact_match} matches any value but not a
        missing header; C{treat_missing_header_as_empty} makes a missing
        header present (so C{present_match: false} fails) with the value
        C{""} (so an inverted C{exact: a} holds) (Envoy 1.40).
        """
        self.assertEqual(self.name(b"/oe", (b"x-h", b"zzz")), "old-empty")
        self.assertIsNone(self.name(b"/oe"))
        self.assertIsNone(self.name(b"/ae"))
        self.assertEqual(self.name(b"/ie"), "invert-empty")
        self.assertIsNone(self.name(b"/ie", (b"x-h", b"a")))

    def test_range(self):
        """
        C{range_match} is C{[start, end)} over an integer value.
        """
        self.assertEqual(self.name(b"/range", (b"x-h", b"5")), "range")
        self.assertEqual(self.name(b"/range", (b"x-h", b"6")), "range")
        self.assertIsNone(self.name(b"/range", (b"x-h", b"7")))
        self.assertIsNone(self.name(b"/range", (b"x-h", b"5x")))
        self.assertIsNone(self.name(b"/range", (b"x-h", b"5_0")))
        self.assertIsNone(self.name(b"/range", (b"x-h", b"6.0")))
        self.assertEqual(self.name(b"/range", (b"x-h", b"+6")), "range")

    def test_deprecatedSpecifiers(self):
        """
        The deprecated C{exact_match}, C{prefix_match}, C{suffix_match},
        C{contains_match} and C{safe_regex_match} still work.
        """
        self.assertEqual(self.name(b"/old", (b"x-h", b"v")), "old-exact")
        self.assertEqual(self.name(b"/oldp", (b"x-h", b"abc")), "old-prefix")
        self.assertEqual(self.name(b"/olds", (b"x-h", b"xyz")), "old-suffix")
        self.assertEqual(self.name(b"/oldc", (b"x-h", b"amidb")), "old-contains")
        self.assertEqual(self.name(b"/oldr", (b"x-h", b"123")), "old-regex")
        self.assertIsNone(self.name(b"/oldr", (b"x-h", b"123a")))

    def test_pseudoHeaders(self):
        """
        C{:method}, C{:authority} (and C{host}), C{:path} (with its query)
        and C{:scheme} come from the request line (Envoy 1.40:
        C{:authority} carried the port and C{host} matched the authority).
        """
        self.assertEqual(self.name(b"/method", method=b"POST"), "method")
        self.assertIsNone(self.name(b"/method"))
        self.assertEqual(self.name(b"/auth", authority=b"h.com:8080"), "authority")
        self.assertIsNone(self.name(b"/auth", authority=b"h.com"))
        self.assertEqual(self.name(b"/host"), "host")
        self.assertEqual(self.name(b"/path?x=1"), "path")
        self.assertIsNone(self.name(b"/path"))

    def test_scheme(self):
        """
        C{:scheme} is C{x-forwarded-proto}, else C{http} (Envoy 1.40: an
        C{x-forwarded-proto: https} request did not match C{:scheme: http}).
        """
        self.assertEqual(self.name(b"/scheme"), "scheme")
        self.assertIsNone(self.name(b"/scheme", (b"x-forwarded-proto", b"https")))

    def test_grpc(self):
        """
        C{grpc} needs a gRPC content type (not gRPC-Web).
        """
        self.assertEqual(self.name(b"/grpc", (b"content-type", b"application/grpc")), "grpc")
        self.assertEqual(self.name(b"/grpc", (b"content-type", b"application/grpc+proto")),
                         "grpc")
        self.assertIsNone(self.name(b"/grpc", (b"content-type", b"application/grpc-web")))
        self.assertIsNone(self.name(b"/grpc"))

    def test_allMustMatch(self):
        """
        Every header condition must hold.
        """
        self.assertEqual(self.name(b"/all", (b"x-a", b"1"), (b"x-b", b"1")), "all")
        self.assertIsNone(self.name(b"/all", (b"x-a", b"1")))


class StringMatcherTests(SynchronousTestCase):
    """
    L{compileStringMatcher}, reusable by any filter.
    """

    def matcher(self, spec):
        from envoy.type.matcher.v3 import string_pb2
        return compileStringMatcher(json_format.ParseDict(spec, string_pb2.StringMatcher()), "m")

    def test_kinds(self):
        """
        exact, prefix, suffix, contains and safe_regex.
        """
        self.assertTrue(self.matcher({"exact": "abc"})(b"abc"))
        self.assertFalse(self.matcher({"exact": "abc"})(b"ABC"))
        self.assertTrue(self.matcher({"prefix": "ab"})(b"abc"))
        self.assertTrue(self.matcher({"suffix": "bc"})(b"abc"))
        self.assertTrue(self.matcher({"contains": "b"})(b"abc"))
        self.assertTrue(self.matcher({"safe_regex": {"regex": "a.c"}})(b"abc"))
        self.assertFalse(self.matcher({"safe_regex": {"regex": "a.c"}})(b"abcd"))

    def test_ignoreCase(self):
        """
        C{ignore_case} compares ASCII letters without case.
        """
        for spec, value in [({"exact": "AbC"}, b"aBc"), ({"prefix": "AB"}, b"abc"),
                            ({"suffix": "BC"}, b"abc"), ({"contains": "B"}, b"abc")]:
            spec["ignore_case"] = True
            self.assertTrue(self.matcher(spec)(value), spec)
        self.assertFalse(self.matcher({"exact": "ab", "ignore_case": True})(b"abc"))

    def test_ignoreCaseWithRegex(self):
        """
        C{ignore_case} with C{safe_regex} is Envoy's error.
        """
        error = self.assertRaises(ConfigError, self.matcher,
                                  {"safe_regex": {"regex": "a"}, "ignore_case": True})
        self.assertEqual(str(error), "ignore_case has no effect for safe_regex. @ m")

    def test_regexReadsLatin1(self):
        """
        A regex reads the value's bytes as Latin-1, as Envoy 1.40 does
        (observed: C{safe_regex: caf.} on a header matches C{caf\\xe9} but
        not the UTF-8 C{café}); a pattern's own text is its UTF-8 bytes.
        """
        match = self.matcher({"safe_regex": {"regex": "caf."}})
        self.assertTrue(match(b"caf\xe9"))
        self.assertFalse(match("café".encode()))
        optional = self.matcher({"safe_regex": {"regex": "/café?"}})
        self.assertTrue(optional("/café".encode()))
        self.assertTrue(optional(b"/caf\xc3"))
        self.assertFalse(optional(b"/caf"))


QUERY = """
- {name: exact, match: {prefix: "/q", query_parameters: [{name: debug, string_match: {exact: "1"}}]}, direct_response: {status: 200}}
- {name: present, match: {prefix: "/p", query_parameters: [{name: flag, present_match: true}]}, direct_response: {status: 200}}
- {name: empty, match: {prefix: "/e", query_parameters: [{name: flag, string_match: {exact: ""}}]}, direct_response: {status: 200}}
"""


class QueryParameterTests(SynchronousTestCase):
    """
    Route C{query_parameters} conditions.
    """

    def setUp(self):
        self.table = _oneHost(QUERY)

    def name(self, path):
        return _name(_route(self.table, path))

    def test_exact(self):
        """
        The first value of a repeated name is the one matched, and nothing
        is percent-decoded (Envoy 1.40: C{debug=1&debug=2} matched,
        C{debug=2&debug=1} and C{debug=%31} did not).
        """
        self.assertEqual(self.name(b"/q?debug=1"), "exact")
        self.assertEqual(self.name(b"/q?x=2&debug=1&debug=2"), "exact")
        self.assertIsNone(self.name(b"/q?debug=2&debug=1"))
        self.assertIsNone(self.name(b"/q?debug=%31"))
        self.assertIsNone(self.name(b"/q"))

    def test_present(self):
        """
        C{present_match} needs the name, with or without a value.
        """
        self.assertEqual(self.name(b"/p?flag"), "present")
        self.assertEqual(self.name(b"/p?a=1&flag=x"), "present")
        self.assertIsNone(self.name(b"/p?flags=1"))

    def test_lookupAgreesWithParse(self):
        """
        The matcher's direct lookup in the query finds the same value as a
        full parse.
        """
        from txenvoy.router.matcher import QueryParameterMatcher, queryOf
        matcher = QueryParameterMatcher(b"id", None)
        for path in [b"/?id=1", b"/?x=1&id=2&id=3", b"/?idx=1", b"/?xid=1", b"/?id",
                     b"/?a=1&id&id=2", b"/?a=id&b=2", b"/", b"/?", b"/?id=1=2"]:
            expected = parseQueryParameters(path).get(b"id")
            seen = []
            QueryParameterMatcher(b"id", lambda v: seen.append(v) or True).matchesQuery(
                queryOf(path))
            self.assertEqual(seen[0] if seen else None, expected, path)
            self.assertEqual(matcher.matchesQuery(queryOf(path)), expected is not None, path)

    def test_nameWithoutValue(self):
        """
        A name without C{=} has the empty value.
        """
        self.assertEqual(self.name(b"/e?flag"), "empty")
        self.assertEqual(parseQueryParameters(b"/x?a&b=1&a=2"), {b"a": b"", b"b": b"1"})


WEIGHTED = """
name: w
virtual_hosts:
- name: v
  domains: ["*"]
  request_headers_to_add:
  - header: {key: x-level, value: vhost}
  routes:
  - name: split
    match: {prefix: "/"}
    route:
      weighted_clusters:
        clusters:
        - name: zero
          weight: 0
        - name: main
          weight: 90
          request_headers_to_add:
          - header: {key: x-level, value: cluster}
        - name: canary
          weight: 10
"""


class WeightedClusterTests(SynchronousTestCase):
    """
    C{weighted_clusters}, picked with an injected random number.
    """

    def pick(self, value, table=WEIGHTED, headers=None):
        match = _table(table, rng=lambda: value).route(
            b"h", b"/", headers or FakeHeaders(), b"GET")
        return match.clusterName

    def test_pick(self):
        """
        A random number in C{[0, 1)} is scaled to the total weight and the
        cluster whose interval holds it is picked; zero-weight clusters are
        never picked.
        """
        self.assertEqual(self.pick(0.0), "main")
        self.assertEqual(self.pick(0.899), "main")
        self.assertEqual(self.pick(0.9), "canary")
        self.assertEqual(self.pick(0.9999), "canary")

    def test_headerRandomValue(self):
        """
        With C{header_name}, a single numeric header value is the random
        value (modulo the total weight).
        """
        table = WEIGHTED.replace("        clusters:", "        header_name: x-rand\n"
                                                      "        clusters:")
        self.assertEqual(self.pick(0.0, table, FakeHeaders((b"x-rand", b"195"))), "canary")
        self.assertEqual(self.pick(0.95, table, FakeHeaders((b"x-rand", b"5"))), "main")
        self.assertEqual(self.pick(0.95, table, FakeHeaders((b"x-rand", b"x"))), "canary")

    def test_weightedMatch(self):
        """
        A weighted pick's match names the cluster, with the cluster's header
        mutations before the route's chain.
        """
        table = _table(WEIGHTED, rng=lambda: 0.1)
        match = table.route(b"h", b"/", FakeHeaders(), b"GET")
        self.assertIs(match.weightedCluster, table.route(b"h", b"/", FakeHeaders(),
                                                         b"GET").weightedCluster)
        self.assertEqual(match.weightedCluster.name, "main")
        headers = FakeHeaders()
        match.requestHeadersMutations.apply(headers)
        self.assertEqual(headers.getAll(b"x-level"), [b"cluster", b"vhost"])

    def test_entryClusterName(self):
        """
        L{RouteEntry.clusterName} picks too.
        """
        entry = _table(WEIGHTED, rng=lambda: 0.95).virtualHosts[0].routes[0]
        self.assertEqual(entry.clusterName(FakeHeaders()), "canary")
        self.assertEqual(entry.totalWeight, 100)

    def test_zeroTotal(self):
        """
        Weights summing to zero are Envoy's error.
        """
        error = self.assertRaises(ConfigError, _oneHost, """
- match: {prefix: "/"}
  route: {weighted_clusters: {clusters: [{name: c1, weight: 0}]}}
""")
        self.assertTrue(str(error).startswith(
            "Sum of weights in the weighted_cluster must be greater than 0."))

    def test_totalWeightIgnored(self):
        """
        The deprecated C{total_weight} is ignored, as Envoy 1.40 does.
        """
        table = _oneHost("""
- match: {prefix: "/"}
  route: {weighted_clusters: {total_weight: 50, clusters: [{name: c1, weight: 10}]}}
""")
        self.assertEqual(_route(table, b"/").clusterName, "c1")


class ClusterTests(SynchronousTestCase):
    """
    Cluster specifiers and C{validate_clusters}.
    """

    def test_unknownCluster(self):
        """
        A static cluster that does not exist is Envoy's error.
        """
        error = self.assertRaises(ConfigError, _table, """
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: nope}}]}
""", {"c1"})
        self.assertEqual(str(error), "route: unknown cluster 'nope' "
                                     "@ rc.virtual_hosts[0].routes[0].route.cluster")

    def test_unknownWeightedCluster(self):
        """
        So is a weighted cluster that does not exist.
        """
        error = self.assertRaises(ConfigError, _table, """
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: "/"}, route: {weighted_clusters: {clusters: [{name: nope, weight: 1}]}}}]}
""", {"c1"})
        self.assertTrue(str(error).startswith("route: unknown weighted cluster 'nope' @ "))

    def test_validationSkipped(self):
        """
        C{validate_clusters: false}, or no list of clusters, skips the check;
        C{cluster_header} is never checked.
        """
        text = """
%s
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: nope}},
                                     {match: {prefix: "/h"}, route: {cluster_header: x-cluster}}]}
"""
        _table(text % ("validate_clusters: false",), {"c1"})
        _table(text % ("",))
        self.assertRaises(ConfigError, _table, text % ("validate_clusters: true",), {"c1"})

    def test_clusterHeader(self):
        """
        C{cluster_header} takes the first value of the header; a missing
        header gives no cluster.
        """
        table = _oneHost('- {match: {prefix: "/"}, route: {cluster_header: X-Cluster}}')
        match = _route(table, b"/", headers=FakeHeaders((b"x-cluster", b"c2"),
                                                        (b"x-cluster", b"c3")))
        self.assertEqual(match.clusterName, "c2")
        self.assertIsNone(_route(table, b"/").clusterName)

    def test_matchKeepsItsTable(self):
        """
        A match keeps its whole route configuration alive: the entries and
        virtual hosts point up to it weakly, so that a replaced route
        configuration holds no reference cycle, and is freed by reference
        counting alone once no request uses it.
        """
        table = _oneHost('- {name: r, match: {prefix: "/"}, route: {cluster: c1}}')
        match = _route(table, b"/a")
        self.assertIsInstance(match, RouteMatch)
        self.assertIs(match.routeTable, table)
        self.assertIs(match.entry, _route(table, b"/b").entry)
        self.assertEqual(match.clusterName, "c1")
        self.assertEqual(match.entry.clusterName(FakeHeaders()), "c1")
        tableRef = weakref.ref(table)
        del table
        self.assertIs(match.virtualHost.routeTable, tableRef())
        self.assertIs(match.entry.virtualHost, match.virtualHost)
        del match
        self.assertIsNone(tableRef())


class RewriteTests(SynchronousTestCase):
    """
    C{prefix_rewrite} and C{regex_rewrite}, checked on Envoy 1.40 with an
    echoing upstream.
    """

    def setUp(self):
        self.table = _oneHost(r"""
- {match: {prefix: "/up"}, route: {cluster: c, prefix_rewrite: "/rewritten"}}
- {match: {prefix: "/UPCI", case_sensitive: false}, route: {cluster: c, prefix_rewrite: "/lower"}}
- {match: {safe_regex: {regex: "/rx/[0-9]+"}}, route: {cluster: c, prefix_rewrite: "/pr"}}
- {match: {path: "/exact"}, route: {cluster: c, prefix_rewrite: "/ex2"}}
- {match: {path_separated_prefix: "/psp"}, route: {cluster: c, prefix_rewrite: "/z"}}
- {match: {prefix: "/rr/"}, route: {cluster: c, regex_rewrite: {pattern: {regex: "^/rr/(\\w+)/(\\w+)$"}, substitution: "/\\2/\\1"}}}
- {match: {prefix: "/bad"}, route: {cluster: c, regex_rewrite: {pattern: {regex: "a"}, substitution: "\\1"}}}
- {match: {prefix: "/opt"}, route: {cluster: c, regex_rewrite: {pattern: {regex: "(x)?opt"}, substitution: "[\\1]"}}}
- {match: {prefix: "/none"}, route: {cluster: c}}
""")

    def rewrite(self, path):
        return _route(self.table, path).rewritePath(path)

    def test_prefixRewrite(self):
        """
        The matched prefix is replaced; the rest and the query are kept.
        """
        self.assertEqual(self.rewrite(b"/up/multi?x=1"), b"/rewritten/multi?x=1")

    def test_caseInsensitivePrefixRewrite(self):
        """
        With C{case_sensitive: false} the request's spelling of the prefix
        is replaced (Envoy 1.40: C{/UpCi/X?y} became C{/lower/X?y}).
        """
        self.assertEqual(self.rewrite(b"/UpCi/X?y"), b"/lower/X?y")

    def test_prefixRewriteOnOtherSpecifiers(self):
        """
        On a regex route the whole path is the matched part; on a path route
        the path (Envoy 1.40: C{/rx/123?q=1} became C{/pr?q=1}).
        """
        self.assertEqual(self.rewrite(b"/rx/123?q=1"), b"/pr?q=1")
        self.assertEqual(self.rewrite(b"/exact?x=1"), b"/ex2?x=1")
        self.assertEqual(self.rewrite(b"/psp/a"), b"/z/a")
        self.assertEqual(self.rewrite(b"/psp"), b"/z")

    def test_regexRewrite(self):
        """
        C{regex_rewrite} replaces within the path and keeps the query
        (Envoy 1.40: C{/rr/ab/cd?z} became C{/cd/ab?z}).
        """
        self.assertEqual(self.rewrite(b"/rr/ab/cd?z"), b"/cd/ab?z")
        self.assertEqual(self.rewrite(b"/opt/a"), b"/[]/a")

    def test_invalidSubstitution(self):
        """
        A substitution naming a group the pattern lacks leaves the path
        alone (Envoy 1.40 accepted the config and forwarded the path as is).
        """
        self.assertEqual(self.rewrite(b"/bad/a"), b"/bad/a")

    def test_noRewrite(self):
        """
        Without a rewrite the path is returned unchanged.
        """
        self.assertEqual(self.rewrite(b"/none?x"), b"/none?x")

    def test_bothRewrites(self):
        """
        C{prefix_rewrite} with C{regex_rewrite} is Envoy's error.
        """
        error = self.assertRaises(ConfigError, _oneHost, """
- match: {prefix: "/"}
  route: {cluster: c, prefix_rewrite: "/x", regex_rewrite: {pattern: {regex: "a"}, substitution: "b"}}
""")
        self.assertTrue(str(error).startswith(
            "Specify only one of prefix_rewrite, regex_rewrite or path_rewrite_policy"))

    def test_hostRewrite(self):
        """
        C{host_rewrite_literal}, C{host_rewrite_header} and
        C{host_rewrite_path_regex}; C{auto_host_rewrite} is a flag.
        """
        table = _oneHost(r"""
- {match: {prefix: "/lit"}, route: {cluster: c, host_rewrite_literal: web.internal}}
- {match: {prefix: "/hdr"}, route: {cluster: c, host_rewrite_header: X-Host}}
- {match: {prefix: "/rx"}, route: {cluster: c, host_rewrite_path_regex: {pattern: {regex: "^/rx/([a-z]+).*"}, substitution: "\\1.internal"}}}
- {match: {prefix: "/auto"}, route: {cluster: c, auto_host_rewrite: true}}
""")
        headers = FakeHeaders((b"x-host", b"from.header"))
        self.assertEqual(_route(table, b"/lit").rewriteHost(headers, b"/lit"), b"web.internal")
        self.assertEqual(_route(table, b"/hdr").rewriteHost(headers, b"/hdr"), b"from.header")
        self.assertEqual(_route(table, b"/rx/abc/d?q").rewriteHost(headers, b"/rx/abc/d?q"),
                         b"abc.internal")
        auto = _route(table, b"/auto")
        self.assertTrue(auto.entry.autoHostRewrite)
        self.assertIsNone(auto.rewriteHost(headers, b"/auto"))


REDIRECTS = r"""
- {match: {prefix: "/d301"}, direct_response: {status: 301}}
- {match: {prefix: "/d201"}, direct_response: {status: 201, body: {inline_string: "created"}}}
- {match: {prefix: "/d200"}, direct_response: {status: 200}}
- {match: {prefix: "/r/https"}, redirect: {https_redirect: true}}
- {match: {prefix: "/r/port"}, redirect: {port_redirect: 8443}}
- {match: {prefix: "/r/strip"}, redirect: {strip_query: true, response_code: FOUND}}
- {match: {prefix: "/r/prefix/"}, redirect: {prefix_rewrite: "/new/", response_code: SEE_OTHER}}
- {match: {prefix: "/r/regex"}, redirect: {regex_rewrite: {pattern: {regex: "^/r/regex/([a-z]+)$"}, substitution: "/x/\\1/y"}, response_code: TEMPORARY_REDIRECT}}
- {match: {prefix: "/r/pathq"}, redirect: {path_redirect: "/p?a=b", strip_query: true, response_code: PERMANENT_REDIRECT}}
- {match: {prefix: "/r/path"}, redirect: {path_redirect: "/p"}}
- {match: {prefix: "/r/hostport"}, redirect: {host_redirect: "h.example.com", port_redirect: 81, https_redirect: true}}
- {match: {prefix: "/r/host"}, redirect: {host_redirect: "other.example.com"}}
- {match: {prefix: "/r/scheme"}, redirect: {scheme_redirect: "ftp"}}
"""


class RedirectTests(SynchronousTestCase):
    """
    The C{location} header and status of redirects, each checked on Envoy
    1.40 with the same config and curl.
    """

    def setUp(self):
        self.table = _oneHost(REDIRECTS)

    def location(self, path, authority=b"api.example.com", scheme=b"http",
                 forwardedProto=None):
        match = _route(self.table, path, authority)
        self.assertTrue(match.entry.addsLocation)
        return match.entry.responseCode, match.redirectLocation(
            scheme, authority, path, forwardedProto)

    def test_httpsRedirect(self):
        """
        C{https_redirect} drops the http default port and keeps others.
        """
        self.assertEqual(self.location(b"/r/https/a?b=c", b"api.example.com:80"),
                         (301, b"https://api.example.com/r/https/a?b=c"))
        self.assertEqual(self.location(b"/r/https/a?b=c", b"api.example.com:8080"),
                         (301, b"https://api.example.com:8080/r/https/a?b=c"))
        self.assertEqual(self.location(b"/r/https/a?b=c", b"api.example.com:443", b"https"),
                         (301, b"https://api.example.com:443/r/https/a?b=c"))

    def test_portRedirect(self):
        """
        C{port_redirect} replaces the request's port.
        """
        self.assertEqual(self.location(b"/r/port/a?b=c", b"api.example.com:8080"),
                         (301, b"http://api.example.com:8443/r/port/a?b=c"))

    def test_stripQuery(self):
        """
        C{strip_query} with C{FOUND}.
        """
        self.assertEqual(self.location(b"/r/strip/a?b=c"),
                         (302, b"http://api.example.com/r/strip/a"))

    def test_prefixRewrite(self):
        """
        A redirect's C{prefix_rewrite} with C{SEE_OTHER}.
        """
        self.assertEqual(self.location(b"/r/prefix/a/b?b=c"),
                         (303, b"http://api.example.com/new/a/b?b=c"))

    def test_regexRewrite(self):
        """
        A redirect's C{regex_rewrite} with C{TEMPORARY_REDIRECT}.
        """
        self.assertEqual(self.location(b"/r/regex/abc?b=c"),
                         (307, b"http://api.example.com/x/abc/y?b=c"))

    def test_pathRedirect(self):
        """
        C{path_redirect} keeps the request's query, unless it has its own
        (which C{strip_query} does not strip), with C{PERMANENT_REDIRECT}.
        """
        self.assertEqual(self.location(b"/r/path/abc?b=c"),
                         (301, b"http://api.example.com/p?b=c"))
        self.assertEqual(self.location(b"/r/pathq/abc?b=c"),
                         (308, b"http://api.example.com/p?a=b"))

    def test_hostRedirect(self):
        """
        C{host_redirect} replaces the Host with its port; with a port and a
        scheme both are set.
        """
        self.assertEqual(self.location(b"/r/host/abc?b=c", b"api.example.com:8080"),
                         (301, b"http://other.example.com/r/host/abc?b=c"))
        self.assertEqual(self.location(b"/r/hostport/abc", b"api.example.com:8080"),
                         (301, b"https://h.example.com:81/r/hostport/abc"))

    def test_schemeRedirect(self):
        """
        C{scheme_redirect} keeps a non-default port.
        """
        self.assertEqual(self.location(b"/r/scheme/abc", b"api.example.com:8080"),
                         (301, b"ftp://api.example.com:8080/r/scheme/abc"))

    def test_directResponseLocation(self):
        """
        A direct response with a 3xx or 201 status gets the request's own
        URL as C{location}; other statuses get none.
        """
        self.assertEqual(self.location(b"/d301?x=1"),
                         (301, b"http://api.example.com/d301?x=1"))
        self.assertEqual(self.location(b"/d201"), (201, b"http://api.example.com/d201"))
        self.assertFalse(_route(self.table, b"/d200").entry.addsLocation)

    def test_flags(self):
        """
        Redirect entries are direct responses with no cluster.
        """
        match = _route(self.table, b"/r/https")
        self.assertTrue(match.entry.isRedirect)
        self.assertTrue(match.entry.isDirectResponse)
        self.assertIsNone(match.entry.directResponse)
        self.assertIsNone(match.clusterName)
        self.assertEqual(match.entry.timeout, 0.0)

    def test_requireTls(self):
        """
        C{require_tls: ALL} answers plain http with a 301 to https, same
        Host and path (Envoy 1.40); C{EXTERNAL_ONLY} spares internal
        requests.
        """
        table = _table("""
virtual_hosts:
- {name: all, domains: ["all.com"], require_tls: ALL, routes: [{name: r, match: {prefix: "/"}, direct_response: {status: 200}}]}
- {name: ext, domains: ["ext.com"], require_tls: EXTERNAL_ONLY, routes: [{name: r, match: {prefix: "/"}, direct_response: {status: 200}}]}
""")
        match = table.route(b"all.com", b"/abc?x=1", FakeHeaders(), b"GET")
        self.assertTrue(match.entry.isRedirect)
        self.assertEqual(match.entry.responseCode, 301)
        self.assertEqual(match.redirectLocation(b"http", b"all.com", b"/abc?x=1"),
                         b"https://all.com/abc?x=1")
        https = FakeHeaders((b"x-forwarded-proto", b"https"))
        self.assertEqual(_name(table.route(b"all.com", b"/abc", https, b"GET")), "r")
        internal = FakeHeaders((b"x-envoy-internal", b"true"))
        self.assertEqual(_name(table.route(b"ext.com", b"/", internal, b"GET")), "r")
        self.assertTrue(table.route(b"ext.com", b"/", FakeHeaders(), b"GET").entry.isRedirect)


class DirectResponseTests(SynchronousTestCase):
    """
    C{direct_response} bodies, read once when the config loads.
    """

    def test_bodies(self):
        """
        C{inline_string}, C{inline_bytes} and C{filename}.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"from file\n")
        table = _oneHost("""
- {match: {prefix: "/s"}, direct_response: {status: 403, body: {inline_string: "text\\n"}}}
- {match: {prefix: "/b"}, direct_response: {status: 200, body: {inline_bytes: "AAE="}}}
- {match: {prefix: "/f"}, direct_response: {status: 503, body: {filename: "%s"}}}
- {match: {prefix: "/e"}, direct_response: {status: 204}}
""" % (path.path,))
        self.assertEqual(tuple(_route(table, b"/s").entry.directResponse), (403, b"text\n"))
        self.assertEqual(tuple(_route(table, b"/b").entry.directResponse), (200, b"\x00\x01"))
        self.assertEqual(tuple(_route(table, b"/f").entry.directResponse), (503, b"from file\n"))
        self.assertEqual(tuple(_route(table, b"/e").entry.directResponse), (204, b""))
        path.setContent(b"changed")
        self.assertEqual(_route(table, b"/f").entry.directResponse.body, b"from file\n")

    def test_bodyTooLarge(self):
        """
        Bodies over C{max_direct_response_body_size_bytes} (4096 by default)
        are Envoy's errors.
        """
        error = self.assertRaises(ConfigError, _oneHost, """
- {match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: "%s"}}}
""" % ("x" * 4097,))
        self.assertTrue(str(error).startswith("response body size is 4097 bytes; maximum is 4096"))
        path = FilePath(self.mktemp())
        path.setContent(b"x" * 20)
        error = self.assertRaises(ConfigError, _oneHost, """
- {match: {prefix: "/"}, direct_response: {status: 200, body: {filename: "%s"}}}
""" % (path.path,), "max_direct_response_body_size_bytes: 10")
        self.assertTrue(str(error).startswith(
            "file %s size is 20 bytes; maximum is 10" % (path.path,)))

    def test_missingFile(self):
        """
        A missing body file is Envoy's error.
        """
        error = self.assertRaises(ConfigError, _oneHost, """
- {match: {prefix: "/"}, direct_response: {status: 200, body: {filename: "/nonexistent/x"}}}
""")
        self.assertTrue(str(error).startswith("file /nonexistent/x does not exist"))


MUTATIONS = """
%s
request_headers_to_add:
- header: {key: x-order, value: global}
  append_action: OVERWRITE_IF_EXISTS_OR_ADD
- header: {key: x-app, value: global}
response_headers_to_add:
- header: {key: x-order, value: global}
  append_action: OVERWRITE_IF_EXISTS_OR_ADD
response_headers_to_remove: [x-internal]
virtual_hosts:
- name: v
  domains: ["*"]
  request_headers_to_add:
  - header: {key: x-order, value: vhost}
    append_action: OVERWRITE_IF_EXISTS_OR_ADD
  - header: {key: x-app, value: vhost}
  routes:
  - match: {prefix: "/"}
    route: {cluster: c}
    request_headers_to_add:
    - header: {key: x-order, value: route}
      append_action: OVERWRITE_IF_EXISTS_OR_ADD
    - header: {key: x-app, value: route}
"""


class HeaderMutationOrderTests(SynchronousTestCase):
    """
    The order of route, virtual host and route configuration mutations.
    """

    def test_defaultOrder(self):
        """
        By default the route's mutations run first and the route
        configuration's last, so the least specific level wins an overwrite
        (Envoy 1.40: the upstream got C{x-app: client, route, vhost,
        global} and C{x-order: global}).
        """
        match = _table(MUTATIONS % ("",)).route(b"h", b"/", FakeHeaders(), b"GET")
        headers = FakeHeaders((b"x-order", b"client"), (b"x-app", b"client"))
        match.requestHeadersMutations.apply(headers)
        self.assertEqual(headers.getAll(b"x-app"), [b"client", b"route", b"vhost", b"global"])
        self.assertEqual(headers.getAll(b"x-order"), [b"global"])

    def test_mostSpecificWins(self):
        """
        C{most_specific_header_mutations_wins} reverses the order.
        """
        match = _table(MUTATIONS % ("most_specific_header_mutations_wins: true",)).route(
            b"h", b"/", FakeHeaders(), b"GET")
        headers = FakeHeaders()
        match.requestHeadersMutations.apply(headers)
        self.assertEqual(headers.getAll(b"x-app"), [b"global", b"vhost", b"route"])
        self.assertEqual(headers.getAll(b"x-order"), [b"route"])

    def test_responseMutations(self):
        """
        Response mutations of every level apply, removals included.
        """
        match = _table(MUTATIONS % ("",)).route(b"h", b"/", FakeHeaders(), b"GET")
        headers = FakeHeaders((b"x-internal", b"secret"))
        match.responseHeadersMutations.apply(headers)
        self.assertEqual(headers.entries, [(b"x-order", b"global")])

    def test_noMutations(self):
        """
        A route with no mutations anywhere has an empty (false) chain.
        """
        table = _oneHost('- {match: {prefix: "/"}, route: {cluster: c}}')
        self.assertFalse(_route(table, b"/").requestHeadersMutations)


class RouteActionTests(SynchronousTestCase):
    """
    Timeouts, retries, hash policies, upgrades and per-filter configs.
    """

    def test_timeouts(self):
        """
        The route timeout defaults to 15s (Envoy sent
        C{x-envoy-expected-rq-timeout-ms: 15000}); 0 disables it.
        """
        table = _oneHost("""
- {match: {prefix: "/default"}, route: {cluster: c}}
- {match: {prefix: "/zero"}, route: {cluster: c, timeout: 0s, idle_timeout: 30s}}
- {match: {prefix: "/ms"}, route: {cluster: c, timeout: 1.5s, max_stream_duration: {max_stream_duration: 60s}}}
""")
        self.assertEqual(_route(table, b"/default").entry.timeout, 15.0)
        self.assertIsNone(_route(table, b"/default").entry.idleTimeout)
        zero = _route(table, b"/zero").entry
        self.assertEqual((zero.timeout, zero.idleTimeout), (0.0, 30.0))
        ms = _route(table, b"/ms").entry
        self.assertEqual((ms.timeout, ms.maxStreamDuration), (1.5, 60.0))

    def test_retryPolicy(self):
        """
        A route's policy, the virtual host's as fallback, Envoy's defaults.
        """
        table = _table("""
virtual_hosts:
- name: v
  domains: ["*"]
  retry_policy: {retry_on: "connect-failure, refused-stream,bogus"}
  routes:
  - match: {prefix: "/own"}
    route:
      cluster: c
      retry_policy:
        retry_on: "5xx,reset,retriable-status-codes"
        num_retries: 3
        per_try_timeout: 2s
        retriable_status_codes: [409]
        retry_back_off: {base_interval: 0.05s, max_interval: 1s}
        retry_host_predicate:
        - name: envoy.retry_host_predicates.previous_hosts
        host_selection_retry_max_attempts: 3
  - match: {prefix: "/"}
    route: {cluster: c}
- name: bare
  domains: ["bare"]
  routes:
  - match: {prefix: "/"}
    route: {cluster: c}
""")
        own = _route(table, b"/own").entry.retryPolicy
        self.assertEqual(own.retryOn, {"5xx", "reset", "retriable-status-codes"})
        self.assertEqual((own.numRetries, own.perTryTimeout), (3, 2.0))
        self.assertEqual((own.baseInterval, own.maxInterval), (0.05, 1.0))
        self.assertEqual(own.retriableStatusCodes, {409})
        self.assertEqual(own.hostSelectionRetryMaxAttempts, 3)
        self.assertEqual(len(own.retryHostPredicates), 1)
        inherited = _route(table, b"/x").entry.retryPolicy
        self.assertEqual(inherited.retryOn, {"connect-failure", "refused-stream"})
        self.assertEqual((inherited.numRetries, inherited.baseInterval, inherited.maxInterval),
                         (1, 0.025, 0.25))
        self.assertIs(table.route(b"bare", b"/", FakeHeaders(), b"GET").entry.retryPolicy,
                      DEFAULT_RETRY_POLICY)

    def test_rateLimitedRetryBackOff(self):
        """
        rate_limited_retry_back_off: the reset headers in order with their
        formats, max_interval (Envoy's default 300 s).
        """
        entry = _route(_oneHost("""
- match: {prefix: "/a"}
  route:
    cluster: c
    retry_policy:
      rate_limited_retry_back_off:
        reset_headers: [{name: Retry-After}, {name: x-reset, format: UNIX_TIMESTAMP}]
        max_interval: 20s
- match: {prefix: "/"}
  route: {cluster: c, retry_policy: {rate_limited_retry_back_off: {
      reset_headers: [{name: retry-after}]}}}
"""), b"/a").entry
        policy = entry.retryPolicy
        self.assertEqual(policy.resetHeaders,
                         ((b"retry-after", "SECONDS"), (b"x-reset", "UNIX_TIMESTAMP")))
        self.assertEqual(policy.rateLimitedMaxInterval, 20.0)
        self.assertEqual(DEFAULT_RETRY_POLICY.resetHeaders, ())
        self.assertEqual(DEFAULT_RETRY_POLICY.rateLimitedMaxInterval, 300.0)

    def test_backOffMaxBelowBase(self):
        """
        C{max_interval} below C{base_interval} is Envoy's error.
        """
        error = self.assertRaises(ConfigError, _oneHost, """
- match: {prefix: "/"}
  route: {cluster: c, retry_policy: {retry_back_off: {base_interval: 1s, max_interval: 0.5s}}}
""")
        self.assertTrue(str(error).startswith(
            "retry_policy.max_interval must greater than or equal to the base_interval"))

    def test_hashPolicies(self):
        """
        Header, cookie, source IP and query parameter policies are compiled.
        """
        entry = _route(_oneHost("""
- match: {prefix: "/"}
  route:
    cluster: c
    hash_policy:
    - header: {header_name: X-User}
    - cookie: {name: session, ttl: 10s, path: /}
      terminal: true
    - connection_properties: {source_ip: true}
    - query_parameter: {name: id}
"""), b"/").entry
        self.assertEqual([(h.kind, h.name) for h in entry.hashPolicies], [
            ("header", b"x-user"), ("cookie", b"session"), ("source_ip", None),
            ("query_parameter", b"id")])
        self.assertTrue(entry.hashPolicies[1].terminal)
        self.assertEqual(entry.hashPolicies[1].cookieTtl, 10.0)

    def test_upgradeConfigs(self):
        """
        Per-route upgrades are a map by lower-case type; a duplicate is
        Envoy's error.
        """
        entry = _route(_oneHost("""
- match: {prefix: "/"}
  route: {cluster: c, upgrade_configs: [{upgrade_type: WebSocket}, {upgrade_type: h2c, enabled: false}]}
"""), b"/").entry
        self.assertTrue(entry.upgradeEnabled(b"websocket"))
        self.assertFalse(entry.upgradeEnabled(b"h2c"))
        self.assertIsNone(entry.upgradeEnabled(b"other"))
        error = self.assertRaises(ConfigError, _oneHost, """
- match: {prefix: "/"}
  route: {cluster: c, upgrade_configs: [{upgrade_type: websocket}, {upgrade_type: WebSocket}]}
""")
        self.assertTrue(str(error).startswith("Duplicate upgrade WebSocket"))

    def test_connectMatcher(self):
        """
        Envoy's C{connect_matcher}: a CONNECT, which has no path, matches
        only such a route (Envoy's C{supportsPathlessHeaders}); other
        methods never match it. Its C{connect_config} makes the route
        terminate CONNECT.
        """
        table = _oneHost("""
- name: tunnel
  match: {connect_matcher: {}}
  route: {cluster: c, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]}
- name: all
  match: {prefix: ""}
  route: {cluster: c}
""")
        match = _route(table, None, b"example.com:443", method=b"CONNECT")
        self.assertEqual(_name(match), "tunnel")
        self.assertTrue(match.entry.connectConfig)
        self.assertEqual(_name(_route(table, b"/", method=b"GET")), "all")
        self.assertFalse(_route(table, b"/").entry.connectConfig)
        self.assertIsNone(_route(table, None, method=b"GET"))
        only = _oneHost("""
- match: {prefix: ""}
  route: {cluster: c}
""")
        self.assertIsNone(_route(only, None, b"example.com:443", method=b"CONNECT"))

    def test_connectConfigRefused(self):
        """
        C{connect_config} settings txenvoy does not implement are refused
        by path; a C{connect_config} on another upgrade type is an error.
        """
        error = self.assertRaises(UnsupportedField, _oneHost, """
- match: {connect_matcher: {}}
  route:
    cluster: c
    upgrade_configs:
    - {upgrade_type: CONNECT, connect_config: {proxy_protocol_config: {version: V2}}}
""")
        self.assertIn("upgrade_configs[0].connect_config.proxy_protocol_config", str(error))
        table = _oneHost("""
- match: {prefix: "/"}
  route: {cluster: c, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {allow_post: true}}]}
""")
        self.assertTrue(_route(table, b"/", method=b"POST").entry.connectAllowPost)
        error = self.assertRaises(ConfigError, _oneHost, """
- match: {prefix: "/"}
  route: {cluster: c, upgrade_configs: [{upgrade_type: websocket, connect_config: {}}]}
""")
        self.assertIn("upgrade_configs[0].connect_config", str(error))

    def test_perFilterConfig(self):
        """
        C{typed_per_filter_config} is kept raw at every level and listed
        least specific first.
        """
        table = _table("""
typed_per_filter_config:
  envoy.filters.http.cors:
    "@type": type.googleapis.com/google.protobuf.Struct
    value: {level: config}
virtual_hosts:
- name: v
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.cors:
      "@type": type.googleapis.com/google.protobuf.Struct
      value: {level: vhost}
  routes:
  - match: {prefix: "/"}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.cors:
        "@type": type.googleapis.com/google.protobuf.Struct
        value: {level: route}
""")
        match = table.route(b"h", b"/", FakeHeaders(), b"GET")
        configs = match.perFilterConfigs("envoy.filters.http.cors")
        self.assertEqual(len(configs), 3)
        self.assertTrue(configs[0].type_url.endswith("google.protobuf.Struct"))
        self.assertIs(match.mostSpecificPerFilterConfig("envoy.filters.http.cors"),
                      match.entry.perFilterConfig["envoy.filters.http.cors"])
        self.assertIn("envoy.filters.http.cors", match.virtualHost.perFilterConfig)
        self.assertEqual(match.perFilterConfigs("other"), [])
        self.assertIsNone(match.mostSpecificPerFilterConfig("other"))

    def test_immutable(self):
        """
        Compiled entries refuse assignment.
        """
        entry = _route(_oneHost('- {match: {prefix: "/"}, route: {cluster: c}}'), b"/").entry
        self.assertRaises(AttributeError, setattr, entry, "timeout", 1.0)
        self.assertRaises(AttributeError, setattr, entry.virtualHost, "name", "x")


class UnsupportedTests(SynchronousTestCase):
    """
    Fields txenvoy cannot honour are rejected by their full path.
    """

    def assertUnsupported(self, routes, fieldPath, extra=""):
        error = self.assertRaises(UnsupportedField, _oneHost, routes, extra)
        self.assertTrue(str(error).startswith(fieldPath + ": unsupported field"), str(error))

    def test_routeFields(self):
        """
        Mirror policies' unread fields, rate limits, TLS context matching,
        filter actions.
        """
        self.assertUnsupported("""
- match: {prefix: "/"}
  route: {cluster: c, request_mirror_policies: [{cluster: c, trace_sampled: true}]}
""", "rc.virtual_hosts[0].routes[0].route.request_mirror_policies[0].trace_sampled")
        self.assertUnsupported("""
- match: {prefix: "/", tls_context: {presented: true}}
  route: {cluster: c}
""", "rc.virtual_hosts[0].routes[0].match.tls_context")
        self.assertUnsupported("""
- match: {prefix: "/"}
  non_forwarding_action: {}
""", "rc.virtual_hosts[0].routes[0].non_forwarding_action")

    def test_runtimeFraction(self):
        """
        C{runtime_fraction} is accepted at 100% only.
        """
        table = _oneHost("""
- match: {prefix: "/", runtime_fraction: {default_value: {numerator: 100}, runtime_key: k}}
  route: {cluster: c}
""")
        self.assertIsNotNone(_route(table, b"/"))
        self.assertUnsupported("""
- match: {prefix: "/", runtime_fraction: {default_value: {numerator: 50}, runtime_key: k}}
  route: {cluster: c}
""", "rc.virtual_hosts[0].routes[0].match.runtime_fraction")

    def test_configFields(self):
        """
        Route configuration and virtual host fields.
        """
        self.assertUnsupported('- {match: {prefix: "/"}, route: {cluster: c}}',
                               "rc.vhds", "vhds: {config_source: {ads: {}}}")
        error = self.assertRaises(UnsupportedField, _table, """
virtual_hosts:
- name: v
  domains: ["*"]
  rate_limits: [{actions: [{extension: {name: e, typed_config: {"@type": type.googleapis.com/google.protobuf.Empty}}}]}]
""")
        self.assertTrue(str(error).startswith(
            "rc.virtual_hosts[0].rate_limits[0].actions[0].extension"), str(error))


class ExampleConfigTests(SynchronousTestCase):
    """
    The shared example configs compile and route as Envoy routes them.
    """

    def test_routesRetriesTimeouts(self):
        """
        09-routes-retries-timeouts.yaml.
        """
        config, clusters = _hcmRouteConfig("09-routes-retries-timeouts.yaml")
        table = RouteTable.fromProto(config, "hcm.route_config", clusters, rng=lambda: 0.95)

        canary = table.route(b"api.example.com", b"/v1/x",
                             FakeHeaders((b"x-canary", b"true")), b"GET")
        self.assertEqual(canary.clusterName, "api_v1_canary")
        self.assertEqual(canary.entry.retryPolicy.retryOn,
                         {"connect-failure", "refused-stream", "unavailable"})

        split = table.route(b"api.example.com:8080", b"/v1/users", FakeHeaders(), b"GET")
        self.assertEqual(split.clusterName, "api_v1_canary")
        self.assertEqual(split.entry.timeout, 5.0)
        policy = split.entry.retryPolicy
        self.assertEqual((policy.numRetries, policy.perTryTimeout, policy.baseInterval,
                          policy.maxInterval), (3, 2.0, 0.05, 1.0))

        users = table.route(b"API.EXAMPLE.COM", b"/v2/users/42?x=1", FakeHeaders(), b"GET")
        self.assertEqual(users.clusterName, "api_v2")
        self.assertEqual(users.rewritePath(b"/v2/users/42?x=1"), b"/?x=1")
        self.assertEqual((users.entry.timeout, users.entry.idleTimeout), (0.0, 30.0))
        self.assertIsNone(table.route(b"api.example.com", b"/v2/users/x", FakeHeaders(),
                                      b"GET"))

        search = table.route(b"api.example.com", b"/search?debug=1", FakeHeaders(), b"GET")
        self.assertEqual(tuple(search.entry.directResponse), (403, b"debug search disabled\n"))

        old = table.route(b"www.example.com", b"/old", FakeHeaders(), b"GET")
        self.assertEqual(old.redirectLocation(b"http", b"www.example.com", b"/old"),
                         b"http://www.example.com/new")
        secure = table.route(b"x.example.org", b"/secure/a", FakeHeaders(), b"GET")
        self.assertEqual(secure.redirectLocation(b"http", b"x.example.org", b"/secure/a"),
                         b"https://x.example.org/secure/a")

        web = table.route(b"www.example.com", b"/index.html", FakeHeaders(), b"GET")
        self.assertEqual(web.clusterName, "web")
        self.assertEqual(web.rewriteHost(FakeHeaders(), b"/index.html"), b"web.internal")
        request = FakeHeaders((b"x-txenvoy-front", b"0"))
        web.requestHeadersMutations.apply(request)
        self.assertEqual(request.entries, [(b"x-txenvoy-front", b"1")])
        response = FakeHeaders((b"x-internal-debug", b"1"))
        web.responseHeadersMutations.apply(response)
        self.assertEqual(response.entries, [(b"cache-control", b"no-store")])

        health = table.route(b"anything", b"/healthz", FakeHeaders(), b"GET")
        self.assertEqual(tuple(health.entry.directResponse), (200, b"ok\n"))
        self.assertEqual(table.route(b"anything", b"/x", FakeHeaders(), b"GET").clusterName,
                         "web")

    def test_frontProxy(self):
        """
        02-front-proxy.yaml, both listeners.
        """
        for listener in (0, 1):
            config, clusters = _hcmRouteConfig("02-front-proxy.yaml", listener)
            table = RouteTable.fromProto(config, "rc", clusters)
            self.assertEqual(
                table.route(b"localhost:10002", b"/service/1", FakeHeaders(), b"GET").clusterName,
                "service1-envoy")
            self.assertEqual(
                table.route(b"x", b"/service/2/a", FakeHeaders(), b"GET").clusterName,
                "service2-envoy")
            self.assertIsNone(table.route(b"x", b"/", FakeHeaders(), b"GET"))

    def test_envoyDemo(self):
        """
        01-envoy-demo.yaml.
        """
        config, clusters = _hcmRouteConfig("01-envoy-demo.yaml")
        match = RouteTable.fromProto(config, "rc", clusters).route(
            b"127.0.0.1:10000", b"/", FakeHeaders(), b"GET")
        self.assertEqual(match.clusterName, "service_envoyproxy_io")
        self.assertEqual(match.rewriteHost(FakeHeaders(), b"/"), b"www.envoyproxy.io")
