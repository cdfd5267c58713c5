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

String and header matching is the router's
(L{txenvoy.router.matcher}), so RBAC and routes read headers, RE2
regexes and C{ignore_case} the same way.
"""

import ipaddress

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.router.matcher import compileHeaderMatcher, compileStringMatcher

# envoy.config.rbac.v3.RBAC.Action
ALLOW = 0
DENY = 1
LOG = 2

ACTION_NAMES = {ALLOW: "ALLOW", DENY: "DENY", LOG: "LOG"}


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


def compileTextMatcher(matcher, path):
    """
    Compile an C{envoy.type.matcher.v3.StringMatcher} (or the xds one) for
    values that are text, not bytes: SNI, addresses, certificate names.

    @return: C{match(text) -> bool}.
    """
    test = compileStringMatcher(matcher, path)
    return lambda text: test(text.encode("utf-8", "surrogateescape"))


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

    def matchIp(input):
        address = input.ip(attribute)
        # A Unix socket peer has no IP address: no range holds it.
        return address is not None and address in network

    return matchIp


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
        for sep in (b"?", b"#"):
            i = value.find(sep)
            if i >= 0:
                value = value[:i]
        return test(value)

    return matchPath


def _headerMatcher(header, path):
    matcher = compileHeaderMatcher(header, path)

    def matchHeader(input):
        if input.headers is None:
            # At L4 there are no headers: the matcher sees an empty map.
            return matcher.matchValues(())
        return matcher.matches(input.headers, input.authority, input.path, input.method)

    return matchHeader


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
        return _headerMatcher(permission.header, path + ".header")
    if which == "url_path":
        return _pathMatcher(permission.url_path, path + ".url_path")
    if which == "destination_ip":
        return _ipMatcher(permission.destination_ip, path + ".destination_ip", "localIp")
    if which == "destination_port":
        port = permission.destination_port
        return lambda input: input.localPort == port
    if which == "destination_port_range":
        portRange = permission.destination_port_range
        start, end = portRange.start, portRange.end
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
        test = compileTextMatcher(permission.requested_server_name,
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
        return _headerMatcher(principal.header, path + ".header")
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
    test = compileTextMatcher(authenticated.principal_name, path + ".principal_name")

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
    checkFields(rbac, ("action", "policies", "audit_logging_options"), path)
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
        # Before the handshake ends there is no peer to speak of.
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
    @ivar headers: for HTTP, the request's header map (C{get} and C{getAll}
        by lower-case bytes name, see L{txenvoy.http.headers.HeaderMap});
        C{None} at L4.
    @ivar path: for HTTP, the C{:path} with its query (bytes); C{None} at L4.
    @ivar authority: for HTTP, the C{:authority} (bytes).
    @ivar method: for HTTP, the C{:method} (bytes).
    """

    def __init__(self, remoteIp=None, directRemoteIp=None, localIp=None, localPort=None,
                 requestedServerName="", ssl=None, headers=None, path=None, sourceIp=None,
                 remotePort=None, transportProtocol="raw_buffer", applicationProtocols=(),
                 authority=None, method=None):
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
        self.authority = authority
        self.method = method
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
    def fromConnection(cls, connection, transport=None, request=None, remoteIp=None):
        """
        Build the input for a downstream connection (and, for HTTP, one of
        its requests).

        @param connection: a L{txenvoy.network.connection.ServerConnection}.
        @param transport: the transport the filter writes to, to find TLS.
        @param request: for HTTP, the L{txenvoy.http.headers.RequestHeaders}.
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
            headers=request.headers if request is not None else None,
            path=request.path if request is not None else None,
            authority=request.authority if request is not None else None,
            method=request.method if request is not None else None)
