# -*- test-case-name: tests.rbac.test_engine -*-
"""
The policy engine of Envoy's RBAC filters (C{envoy.config.rbac.v3.RBAC}),
shared by the network and the HTTP filter.

Each policy's permissions and principals are compiled once, when the config
loads, into trees of plain predicates (functions of one L{RbacInput}). A
request or connection is then checked by calling them; nothing is looked up
by name on the data path.

Envoy keeps the policies in a C{std::map}, so they are tried in the order of
their names and the first one that matches is the effective policy; the
same order is used here.

String and header matching is done by the small private compilers below
(C{compileStringMatcher}, C{compileHeaderMatcher}), which follow Envoy's
C{StringMatcherImpl} and C{HeaderUtility} semantics.
"""

import ipaddress
import re

from txenvoy.config.errors import ConfigError, UnsupportedField

# envoy.config.rbac.v3.RBAC.Action
ALLOW = 0
DENY = 1
LOG = 2

ACTION_NAMES = {ALLOW: "ALLOW", DENY: "DENY", LOG: "LOG"}

_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_ASCII_LOWER_STR = {ord(c): ord(c.lower()) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
# absl::SimpleAtoi: optional blanks, optional sign, digits.
_INT_RE = re.compile(r"^\s*[+-]?[0-9]+\s*$")


def statPrefixJoin(prefix, token):
    """
    Envoy's C{statPrefixJoin}: join with a dot unless C{prefix} is empty or
    already ends with one.
    """
    if not prefix:
        return token
    if prefix.endswith("."):
        return prefix + token
    return prefix + "." + token


def _asciiLower(text):
    return text.translate(_ASCII_LOWER_STR)


def _text(value):
    """Header bytes as text, keeping undecodable bytes distinct."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def compileRegex(regexMatcher, path):
    """
    Compile an C{envoy.type.matcher.v3.RegexMatcher} (or the xds one) into
    a function C{text -> bool} that matches the whole text, as RE2's
    C{FullMatch} does.
    """
    try:
        pattern = re.compile(regexMatcher.regex)
    except re.error as e:
        raise ConfigError("%s.regex: invalid regex '%s': %s" % (path, regexMatcher.regex, e))
    fullmatch = pattern.fullmatch
    return lambda text: fullmatch(text) is not None


def compileStringMatcher(matcher, path):
    """
    Compile an C{envoy.type.matcher.v3.StringMatcher} or
    C{xds.type.matcher.v3.StringMatcher} into a function C{text -> bool}.

    C{ignore_case} lower-cases ASCII only, as Envoy does.
    """
    which = matcher.WhichOneof("match_pattern")
    ignoreCase = matcher.ignore_case
    if which == "safe_regex":
        if ignoreCase:
            raise ConfigError("%s: ignore_case has no effect for safe_regex." % (path,))
        return compileRegex(matcher.safe_regex, path + ".safe_regex")
    if which is None:
        raise ConfigError("%s: StringMatcherValidationError.MatchPattern: value is required"
                          % (path,))
    if which == "custom":
        raise UnsupportedField(path + ".custom")
    value = getattr(matcher, which)
    if ignoreCase:
        value = _asciiLower(value)
    if which == "exact":
        test = value.__eq__
    elif which == "prefix":
        test = lambda text: text.startswith(value)
    elif which == "suffix":
        test = lambda text: text.endswith(value)
    else:
        test = lambda text: value in text
    if ignoreCase:
        return lambda text: test(_asciiLower(text))
    return test


def compileHeaderMatcher(header, path):
    """
    Compile an C{envoy.config.route.v3.HeaderMatcher} into a function
    C{headers -> bool}, where C{headers.get(name)} returns the value
    (several values joined with C{,}) or C{None}.

    As in Envoy: a missing header never matches (whatever C{invert_match}
    says) unless C{treat_missing_header_as_empty}; C{present_match} compares
    presence with its value, then C{invert_match} flips the result.
    """
    name = header.name.lower().encode("latin-1")
    invert = header.invert_match
    which = header.WhichOneof("header_match_specifier")
    if which is None or which == "present_match":
        present = header.present_match if which else True

        def matchPresent(headers):
            isPresent = headers is not None and headers.get(name) is not None
            return (isPresent == present) != invert

        return matchPresent

    if which == "exact_match":
        expected = header.exact_match
        test = (lambda text: True) if not expected else expected.__eq__
    elif which == "safe_regex_match":
        test = compileRegex(header.safe_regex_match, path + ".safe_regex_match")
    elif which == "range_match":
        start, end = header.range_match.start, header.range_match.end

        def test(text):
            return _INT_RE.match(text) is not None and start <= int(text) < end
    elif which == "prefix_match":
        prefix = header.prefix_match
        test = lambda text: text.startswith(prefix)
    elif which == "suffix_match":
        suffix = header.suffix_match
        test = lambda text: text.endswith(suffix)
    elif which == "contains_match":
        substring = header.contains_match
        test = lambda text: substring in text
    else:
        test = compileStringMatcher(header.string_match, path + ".string_match")
    missingAsEmpty = header.treat_missing_header_as_empty

    def matchValue(headers):
        value = headers.get(name) if headers is not None else None
        if value is None:
            if not missingAsEmpty:
                return False
            value = ""
        return test(_text(value)) != invert

    return matchValue


def compileCidr(cidr, path):
    """
    Compile an C{envoy.config.core.v3.CidrRange} into an
    C{ipaddress} network.
    """
    length = cidr.prefix_len.value if cidr.HasField("prefix_len") else None
    try:
        address = ipaddress.ip_address(cidr.address_prefix)
        if length is None:
            length = address.max_prefixlen
        return ipaddress.ip_network("%s/%d" % (address, length), strict=False)
    except ValueError as e:
        raise ConfigError("%s: malformed IP address: %s" % (path, e))


def _ipMatcher(cidr, path, attribute):
    network = compileCidr(cidr, path)
    return lambda input: input.ip(attribute) in network


def _pathMatcher(pathMatcher, path):
    which = pathMatcher.WhichOneof("rule")
    if which != "path":
        raise ConfigError("%s: PathMatcherValidationError.Rule: value is required" % (path,))
    test = compileStringMatcher(pathMatcher.path, path + ".path")

    def matchPath(input):
        value = input.path
        if value is None:
            return False
        # Envoy matches the path without its query and fragment.
        value = _text(value)
        for sep in ("?", "#"):
            i = value.find(sep)
            if i >= 0:
                value = value[:i]
        return test(value)

    return matchPath


def _always(input):
    return True


def _allOf(predicates):
    predicates = tuple(predicates)
    return lambda input: all(p(input) for p in predicates)


def _anyOf(predicates):
    predicates = tuple(predicates)
    return lambda input: any(p(input) for p in predicates)


def _networkHeaderError(header):
    # Envoy's message, with the protobuf text of the header matcher.
    return ConfigError("Found header(%s) rule,not supported by RBAC network filter"
                       % (str(header).strip().replace("\n", " "),))


def compilePermission(permission, path, network=False):
    """
    Compile an C{envoy.config.rbac.v3.Permission} into a predicate.

    @param network: C{True} for the network filter, which rejects header
        rules as Envoy does.
    """
    which = permission.WhichOneof("rule")
    if which == "and_rules":
        return _allOf(compilePermission(p, "%s.and_rules.rules[%d]" % (path, i), network)
                      for i, p in enumerate(permission.and_rules.rules))
    if which == "or_rules":
        return _anyOf(compilePermission(p, "%s.or_rules.rules[%d]" % (path, i), network)
                      for i, p in enumerate(permission.or_rules.rules))
    if which == "any":
        return _always
    if which == "header":
        if network:
            raise _networkHeaderError(permission.header)
        headerMatch = compileHeaderMatcher(permission.header, path + ".header")
        return lambda input: headerMatch(input.headers)
    if which == "url_path":
        return _pathMatcher(permission.url_path, path + ".url_path")
    if which == "destination_ip":
        return _ipMatcher(permission.destination_ip, path + ".destination_ip", "localIp")
    if which == "destination_port":
        port = permission.destination_port
        return lambda input: input.localPort == port
    if which == "destination_port_range":
        start, end = permission.destination_port_range.start, permission.destination_port_range.end
        if not 0 <= start <= 65536:
            raise ConfigError("range start %d is out of bounds" % (start,))
        if not 0 <= end <= 65536:
            raise ConfigError("range end %d is out of bounds" % (end,))
        if start >= end:
            raise ConfigError("range start %d cannot be greater or equal than range end %d"
                              % (start, end))
        return lambda input: input.localPort is not None and start <= input.localPort < end
    if which == "not_rule":
        inner = compilePermission(permission.not_rule, path + ".not_rule", network)
        return lambda input: not inner(input)
    if which == "requested_server_name":
        test = compileStringMatcher(permission.requested_server_name,
                                    path + ".requested_server_name")
        return lambda input: test(input.requestedServerName or "")
    if which is None:
        raise ConfigError("%s: PermissionValidationError.Rule: value is required" % (path,))
    # metadata, sourced_metadata, matcher, uri_template
    raise UnsupportedField("%s.%s" % (path, which))


def compilePrincipal(principal, path, network=False):
    """Compile an C{envoy.config.rbac.v3.Principal} into a predicate."""
    which = principal.WhichOneof("identifier")
    if which == "and_ids":
        return _allOf(compilePrincipal(p, "%s.and_ids.ids[%d]" % (path, i), network)
                      for i, p in enumerate(principal.and_ids.ids))
    if which == "or_ids":
        return _anyOf(compilePrincipal(p, "%s.or_ids.ids[%d]" % (path, i), network)
                      for i, p in enumerate(principal.or_ids.ids))
    if which == "any":
        return _always
    if which == "authenticated":
        return _authenticatedMatcher(principal.authenticated, path + ".authenticated")
    if which == "source_ip":
        return _ipMatcher(principal.source_ip, path + ".source_ip", "sourceIp")
    if which == "direct_remote_ip":
        return _ipMatcher(principal.direct_remote_ip, path + ".direct_remote_ip",
                          "directRemoteIp")
    if which == "remote_ip":
        return _ipMatcher(principal.remote_ip, path + ".remote_ip", "remoteIp")
    if which == "header":
        if network:
            raise _networkHeaderError(principal.header)
        headerMatch = compileHeaderMatcher(principal.header, path + ".header")
        return lambda input: headerMatch(input.headers)
    if which == "url_path":
        return _pathMatcher(principal.url_path, path + ".url_path")
    if which == "not_id":
        inner = compilePrincipal(principal.not_id, path + ".not_id", network)
        return lambda input: not inner(input)
    if which is None:
        raise ConfigError("%s: PrincipalValidationError.Identifier: value is required" % (path,))
    # metadata, sourced_metadata, filter_state, custom
    raise UnsupportedField("%s.%s" % (path, which))


def _authenticatedMatcher(authenticated, path):
    if not authenticated.HasField("principal_name"):
        # Any TLS connection, with or without a client certificate.
        return lambda input: input.ssl is not None
    test = compileStringMatcher(authenticated.principal_name, path + ".principal_name")

    def matchPeer(input):
        ssl = input.ssl
        if ssl is None:
            return False
        # Envoy tries the URI SANs, then the DNS SANs, then the subject.
        for name in ssl.uriSans:
            if test(name):
                return True
        for name in ssl.dnsSans:
            if test(name):
                return True
        return test(ssl.subject)

    return matchPeer


class Policy:
    """
    One compiled C{envoy.config.rbac.v3.Policy}: it matches when one of its
    permissions and one of its principals match.
    """

    def __init__(self, name, permissions, principals):
        self.name = name
        self._permissions = tuple(permissions)
        self._principals = tuple(principals)

    def matches(self, input):
        """@return: whether this policy applies to C{input}."""
        return (any(p(input) for p in self._permissions)
                and any(p(input) for p in self._principals))


def compilePolicy(name, policy, path, network=False):
    """Compile an C{envoy.config.rbac.v3.Policy}."""
    for field in ("condition", "checked_condition", "cel_config"):
        if policy.HasField(field):
            raise UnsupportedField("%s.%s" % (path, field))
    if not policy.permissions:
        raise ConfigError("%s: PolicyValidationError.Permissions: value must contain at least "
                          "1 item(s)" % (path,))
    if not policy.principals:
        raise ConfigError("%s: PolicyValidationError.Principals: value must contain at least "
                          "1 item(s)" % (path,))
    return Policy(
        name,
        [compilePermission(p, "%s.permissions[%d]" % (path, i), network)
         for i, p in enumerate(policy.permissions)],
        [compilePrincipal(p, "%s.principals[%d]" % (path, i), network)
         for i, p in enumerate(policy.principals)])


class PolicyEngine:
    """
    Envoy's C{RoleBasedAccessControlEngineImpl}: an action and named
    policies, tried in name order.

      - C{ALLOW}: allowed when a policy matches.
      - C{DENY}: denied when a policy matches.
      - C{LOG}: always allowed; the matched policy is reported so the
        caller may mark the request for logging.

    @ivar action: L{ALLOW}, L{DENY} or L{LOG}.
    @ivar policies: the L{Policy} objects, in name order.
    """

    def __init__(self, action, policies):
        self.action = action
        self.policies = sorted(policies, key=lambda p: p.name)

    def evaluate(self, input):
        """
        @param input: an L{RbacInput}.
        @return: C{(allowed, matchedPolicyName)}; the name is C{None} when
            no policy matched.
        """
        matched = None
        for policy in self.policies:
            if policy.matches(input):
                matched = policy.name
                break
        if self.action == ALLOW:
            return matched is not None, matched
        if self.action == DENY:
            return matched is None, matched
        return True, matched


def createPolicyEngine(rbac, path, network=False):
    """
    Compile an C{envoy.config.rbac.v3.RBAC} message.

    @param path: the field path of C{rbac}, for messages.
    @param network: C{True} for the network filter.
    @return: a L{PolicyEngine}.
    """
    if rbac.HasField("audit_logging_options"):
        raise UnsupportedField(path + ".audit_logging_options")
    policies = [compilePolicy(name, rbac.policies[name], "%s.policies[%s]" % (path, name),
                              network)
                for name in sorted(rbac.policies)]
    return PolicyEngine(rbac.action, policies)


class PeerIdentity:
    """
    What the C{authenticated} principal sees of a TLS peer (Envoy's
    C{uriSanPeerCertificate}, C{dnsSansPeerCertificate},
    C{subjectPeerCertificate}).

    @ivar uriSans: URI subject alternative names.
    @ivar dnsSans: DNS subject alternative names.
    @ivar subject: the subject as an RFC 2253 string, C{""} without a
        certificate.
    """

    __slots__ = ("uriSans", "dnsSans", "subject")

    def __init__(self, uriSans=(), dnsSans=(), subject=""):
        self.uriSans = tuple(uriSans)
        self.dnsSans = tuple(dnsSans)
        self.subject = subject


def peerIdentityOf(transport):
    """
    The L{PeerIdentity} of a TLS transport, or C{None} when the transport
    is not TLS (it has no C{getPeerCertificate}, see C{ISSLTransport}).
    """
    getter = getattr(transport, "getPeerCertificate", None)
    if getter is None:
        return None
    try:
        cert = getter()
    except Exception:
        cert = None
    if cert is None:
        return PeerIdentity()
    from cryptography import x509

    if hasattr(cert, "to_cryptography"):
        cert = cert.to_cryptography()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        uris = dns = ()
    return PeerIdentity(uris, dns, cert.subject.rfc4514_string())


class RequestHeaderView:
    """
    Header lookup for RBAC over a L{txenvoy.http.headers.RequestHeaders}:
    C{get(b":path")} and the other pseudo-headers read the request line
    (C{host} is C{:authority}, as in Envoy's header map), and repeated
    headers are joined with C{,} as Envoy's header matchers see them.
    """

    __slots__ = ("_request",)

    def __init__(self, request):
        self._request = request

    def get(self, name):
        """@return: the value as bytes, or C{None}."""
        request = self._request
        if name in (b":authority", b"host"):
            return request.authority
        if name == b":path":
            return request.path
        if name == b":method":
            return request.method
        if name == b":scheme":
            return request.scheme
        values = request.headers.getAll(name)
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        return b",".join(values)


class RbacInput:
    """
    What RBAC rules and matchers look at for one connection or request.

    IP addresses are kept as text and parsed on first use.

    @ivar remoteIp: the client address (after PROXY protocol; for HTTP, as
        derived from C{x-forwarded-for} when trusted).
    @ivar directRemoteIp: the address of the peer of the socket.
    @ivar sourceIp: the connection's remote address (Envoy's deprecated
        C{source_ip}); defaults to L{remoteIp}.
    @ivar localIp: the address the client connected to.
    @ivar localPort: that port, an int, or C{None}.
    @ivar remotePort: the client's port, an int, or C{None}.
    @ivar requestedServerName: SNI, or C{""}.
    @ivar transportProtocol: C{"tls"} or C{"raw_buffer"}.
    @ivar applicationProtocols: ALPN (or sniffed) protocols.
    @ivar ssl: a L{PeerIdentity} for a TLS connection, else C{None}.
    @ivar headers: for HTTP, an object whose C{get(lowercase bytes)} gives
        a header value (see L{RequestHeaderView}); C{None} at L4.
    @ivar path: for HTTP, the C{:path} (bytes); C{None} at L4.
    """

    def __init__(self, remoteIp=None, directRemoteIp=None, localIp=None, localPort=None,
                 requestedServerName="", ssl=None, headers=None, path=None, sourceIp=None,
                 remotePort=None, transportProtocol="raw_buffer", applicationProtocols=()):
        self.remoteIp = remoteIp
        self.directRemoteIp = directRemoteIp if directRemoteIp is not None else remoteIp
        self.sourceIp = sourceIp if sourceIp is not None else remoteIp
        self.localIp = localIp
        self.localPort = localPort
        self.remotePort = remotePort
        self.requestedServerName = requestedServerName or ""
        self.transportProtocol = transportProtocol
        self.applicationProtocols = tuple(applicationProtocols)
        self.ssl = ssl
        self.headers = headers
        self.path = path
        self._parsed = {}

    def ip(self, attribute):
        """
        @param attribute: C{"remoteIp"}, C{"directRemoteIp"}, C{"sourceIp"}
            or C{"localIp"}.
        @return: that address as an C{ipaddress} object, or C{None} when it
            is not an IP address (a Unix socket).
        """
        try:
            return self._parsed[attribute]
        except KeyError:
            pass
        text = getattr(self, attribute)
        try:
            value = ipaddress.ip_address(text) if text else None
        except ValueError:
            value = None
        self._parsed[attribute] = value
        return value

    @classmethod
    def fromConnection(cls, connection, transport=None, headers=None, path=None,
                       remoteIp=None):
        """
        Build the input for a downstream connection (and, for HTTP, one of
        its requests).

        @param connection: a L{txenvoy.network.connection.ServerConnection}.
        @param transport: the transport the filter writes to, to find TLS.
        @param remoteIp: overrides the connection's remote address (HTTP
            with a trusted C{x-forwarded-for}).
        """
        info = connection.streamInfo
        remote = connection.remoteAddress
        direct = info.downstreamDirectRemoteAddress or remote
        local = getattr(connection, "localAddress", None) or info.downstreamLocalAddress
        return cls(
            remoteIp=remoteIp if remoteIp is not None else (remote[0] if remote else None),
            directRemoteIp=direct[0] if direct else None,
            sourceIp=remote[0] if remote else None,
            localIp=local[0] if local else None,
            localPort=local[1] if local else None,
            remotePort=remote[1] if remote else None,
            requestedServerName=info.requestedServerName,
            transportProtocol=getattr(connection, "transportProtocol", "raw_buffer"),
            applicationProtocols=getattr(connection, "applicationProtocols", ()),
            ssl=peerIdentityOf(transport) if transport is not None else None,
            headers=headers,
            path=path)
