# -*- test-case-name: tests.http.test_hash_policy -*-
"""
A route's C{hash_policy} evaluated on one request (Envoy's
C{Http::HashPolicyImpl::generateHash}): the 64-bit hash a consistent-hash
load balancer (RING_HASH, MAGLEV) places the request with.

Each policy that yields a hash is folded into the result (the previous
value rotated left one bit, xor the new one, so duplicate policies do not
cancel out); a C{terminal} policy that produced a hash, alone or with
those before it, ends the walk. No hash at all means the load balancer
picks at random, as Envoy's does.

The hashes are Envoy's own: xxHash64 of the header values (sorted, each
seeding the next), of the cookie value, of the client's IP address text,
of the first query parameter value (not decoded) or of the filter state
object, so that Envoy and txenvoy send the same request to the same host.
"""

from txenvoy.network.address import formatAddress
from txenvoy.upstream.hashing import rotateCombine, uint64ToHex, xxHash64, xxHash64Values

_REQUEST_KINDS = frozenset(("header", "cookie", "query_parameter"))
_PSEUDO = {b":authority": "authority", b":path": "path", b":method": "method",
           b":scheme": "scheme"}


def generateHash(policies, request, streamInfo, addCookie=None):
    """
    @param policies: the route's compiled
        L{txenvoy.router.config.HashPolicy} tuple.
    @param request: the L{txenvoy.http.headers.RequestHeaders}, or
        C{None} (a TCP connection: only C{source_ip} and C{filter_state}
        can hash).
    @param streamInfo: the stream's
        L{txenvoy.network.stream_info.StreamInfo} (client address, filter
        state).
    @param addCookie: C{addCookie(policy)} returning the value of a cookie
        generated for a C{cookie} policy with a C{ttl} the request lacks
        (see L{generateCookie}); C{None} to generate none.
    @return: the hash (an C{int} below 2**64), or C{None}.
    """
    result = None
    for policy in policies:
        kind = policy.kind
        if request is None and kind in _REQUEST_KINDS:
            new = None
        elif kind == "header":
            new = _headerHash(policy, request)
        elif kind == "cookie":
            value = cookieValue(request.headers, policy.name)
            if not value and policy.cookieTtl is not None and addCookie is not None:
                value = addCookie(policy)
            new = xxHash64(value) if value else None
        elif kind == "source_ip":
            address = streamInfo.downstreamRemoteAddress
            new = xxHash64(address[0]) if address and isinstance(address, tuple) and address[0] \
                else None
        elif kind == "query_parameter":
            new = _queryHash(policy.name, request.path)
        elif kind == "filter_state":
            new = _filterStateHash(streamInfo.filterState.get(policy.name))
        else:
            # connection_properties with source_ip false: Envoy adds no
            # method at all, so it cannot end the walk either.
            continue
        if new is not None:
            result = rotateCombine(result, new)
        if policy.terminal and result is not None:
            break
    return result


def _headerHash(policy, request):
    name = policy.name
    attribute = _PSEUDO.get(name)
    if attribute is not None:
        value = getattr(request, attribute, None)
        values = [value] if value else []
    else:
        values = request.headers.getAll(name)
    if not values:
        return None
    if policy.rewrite is not None:
        values = [policy.rewrite(v) for v in values]
    # Sorted, so that the same values in another order hash the same.
    return xxHash64Values(sorted(values))


def _queryHash(name, path):
    # Envoy's QueryParamsMulti::parseQueryString: split on '&', the value
    # after the first '=', not percent-decoded; the first one wins.
    if not path:
        return None
    start = path.find(b"?")
    if start < 0:
        return None
    for param in path[start + 1:].split(b"&"):
        key, sep, value = param.partition(b"=")
        if key == name:
            return xxHash64(value)
    return None


def _filterStateHash(obj):
    # Envoy hashes filter state objects that are Hashable: a string
    # accessor hashes its value; other objects may offer hash().
    if obj is None:
        return None
    if isinstance(obj, (bytes, str)):
        return xxHash64(obj)
    hashOf = getattr(obj, "hash", None)
    if hashOf is not None:
        return hashOf()
    value = getattr(obj, "value", None)
    if isinstance(value, (bytes, str)):
        return xxHash64(value)
    return None


def cookieValue(headers, name):
    """
    Envoy's C{Utility::parseCookieValue}: the value of the first cookie
    named C{name} in the C{cookie} headers, unquoted, or C{b""}.
    """
    for header in headers.getAll(b"cookie"):
        for part in header.split(b";"):
            key, sep, value = part.lstrip(b" ").partition(b"=")
            if sep and key == name:
                if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
                    value = value[1:-1]
                return value
    return b""


def generateCookie(policy, streamInfo):
    """
    Envoy's C{generateCookie}: the cookie value for a client that sent
    none (the hex xxHash64 of its remote then local address, so that one
    connection always gets the same one) and the C{set-cookie} header
    value that gives it to the client.

    @return: C{(value, setCookie)}, both C{bytes}; C{(b"", None)} when the
        addresses are unknown.
    """
    remote = streamInfo.downstreamRemoteAddress
    local = streamInfo.downstreamLocalAddress
    if not isinstance(remote, tuple) or not isinstance(local, tuple):
        return b"", None
    value = uint64ToHex(xxHash64(formatAddress(remote) + formatAddress(local))).encode("ascii")
    return value, makeSetCookieValue(policy.name, value, policy.cookiePath, policy.cookieTtl,
                                     True, policy.cookieAttributes)


def makeSetCookieValue(name, value, path, maxAge, httpOnly, attributes):
    """
    Envoy's C{Utility::makeSetCookieValue}:
    C{name="value"; Max-Age=N; Path=p; attr=v; HttpOnly} (no C{Max-Age}
    when it is 0, no C{Path} when empty).
    """
    parts = [b'%s="%s"' % (_b(name), value)]
    if maxAge:
        parts.append(b"Max-Age=%d" % (int(maxAge),))
    if path:
        parts.append(b"Path=" + _b(path))
    for attrName, attrValue in attributes:
        if attrValue:
            parts.append(_b(attrName) + b"=" + _b(attrValue))
        else:
            parts.append(_b(attrName))
    if httpOnly:
        parts.append(b"HttpOnly")
    return b"; ".join(parts)


def _b(text):
    return text if isinstance(text, bytes) else text.encode("utf-8")
