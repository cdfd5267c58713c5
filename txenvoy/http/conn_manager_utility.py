# -*- test-case-name: tests.http.test_conn_manager -*-
"""
Request and response header handling of the HTTP connection manager, in
one place (Envoy's C{ConnectionManagerUtility}): what every request head
gets before its filters see it and every response head before it is
encoded, whatever the protocol on the wire.
"""

import os
import random
import socket

__all__ = [
    "mutateRequestHeaders", "mutateResponseHeaders", "requestId", "machineAddress",
    "normalizePath", "mergeSlashes", "HOP_BY_HOP", "EXTERNAL_STRIPPED", "EDGE_STRIPPED",
    "DETECTED", "OVERWRITE", "APPEND_IF_ABSENT", "PASS_THROUGH", "KEEP_UNCHANGED", "REJECT_REQUEST",
    "UNESCAPE_AND_REDIRECT", "UNESCAPE_AND_FORWARD",
]

OVERWRITE, APPEND_IF_ABSENT, PASS_THROUGH = 0, 1, 2
KEEP_UNCHANGED, REJECT_REQUEST, UNESCAPE_AND_REDIRECT, UNESCAPE_AND_FORWARD = 1, 2, 3, 4


# Request headers that never go upstream (hop-by-hop).
HOP_BY_HOP = frozenset([b"connection", b"keep-alive", b"proxy-connection", b"upgrade",
                        b"transfer-encoding"])
# Envoy's cleanInternalHeaders: removed from external requests.
EXTERNAL_STRIPPED = frozenset([
    b"x-envoy-retriable-status-codes", b"x-envoy-retriable-header-names", b"x-envoy-retry-on",
    b"x-envoy-retry-grpc-on", b"x-envoy-max-retries", b"x-envoy-upstream-alt-stat-name",
    b"x-envoy-upstream-rq-timeout-ms", b"x-envoy-upstream-rq-per-try-timeout-ms",
    b"x-envoy-upstream-rq-timeout-alt-response", b"x-envoy-expected-rq-timeout-ms",
    b"x-envoy-force-trace", b"x-envoy-ip-tags", b"x-envoy-original-url",
    b"x-envoy-hedge-on-per-try-timeout", b"x-envoy-internal",
])
# ... and from edge requests (external, with use_remote_address).
EDGE_STRIPPED = frozenset([
    b"x-envoy-decorator-operation", b"x-envoy-downstream-service-cluster",
    b"x-envoy-downstream-service-node", b"x-envoy-original-path",
])
# Request headers the connection manager reads or rewrites.
DETECTED = frozenset([b"x-forwarded-for", b"x-forwarded-proto", b"x-request-id", b"via",
                       b"expect", b"te", b"x-forwarded-client-cert",
                       b"x-envoy-external-address"])
# Response headers the connection manager reads or rewrites.
_RESPONSE_HOP_BY_HOP = frozenset([b"connection", b"keep-alive", b"proxy-connection",
                                  b"upgrade", b"transfer-encoding"])
_RESPONSE_SPECIAL = _RESPONSE_HOP_BY_HOP | frozenset([b"date", b"server", b"via",
                                                      b"x-request-id"])

_getrandbits = random.getrandbits
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)

# Ids are made in batches: one random draw, one hex conversion and 32
# strided copies (the hex digits into their places between the dashes)
# for _ID_BATCH ids, then one list pop per request. Formatting each id on
# its own cost a few percent of a small proxied request.
_ID_BATCH = 256
_BATCH_CLEAR = sum(_UUID_CLEAR << (128 * i) for i in range(_ID_BATCH))
_BATCH_SET = sum(_UUID_SET << (128 * i) for i in range(_ID_BATCH))
# Where hex digit i of an id goes in its 36 characters (8-4-4-4-12).
_DIGIT_AT = [i + (i >= 8) + (i >= 12) + (i >= 16) + (i >= 20) for i in range(32)]
_DASHES = b"-" * (36 * _ID_BATCH)
_ids = []
_popId = _ids.pop


def _makeIds():
    n = (_getrandbits(128 * _ID_BATCH) & _BATCH_CLEAR) | _BATCH_SET
    digits = n.to_bytes(16 * _ID_BATCH, "big").hex().encode()
    text = bytearray(_DASHES)
    for i, at in enumerate(_DIGIT_AT):
        text[at::36] = digits[i::32]
    text = bytes(text)
    _ids[:] = [text[i:i + 36] for i in range(0, len(text), 36)]


def _forgetIds():
    # A forked worker process draws its own (random reseeds there too).
    del _ids[:]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forgetIds)


def requestId():
    """@return: a random (version 4) UUID as Envoy writes C{x-request-id}, C{bytes}."""
    try:
        return _popId()
    except IndexError:
        _makeIds()
        return _popId()


_machineAddresses = {}


def machineAddress(family=socket.AF_INET):
    """
    Envoy's C{Network::Utility::getLocalAddress}: the first non-loopback
    address of the machine's interfaces (what Envoy appends to
    C{x-forwarded-for} for a loopback peer), else the loopback address.
    """
    address = _machineAddresses.get(family)
    if address is not None:
        return address
    address = "127.0.0.1" if family == socket.AF_INET else "::1"
    try:
        import fcntl
        import struct
        for _, name in socket.if_nameindex():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                                     struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
            finally:
                s.close()
            candidate = socket.inet_ntoa(packed[20:24])
            if not candidate.startswith("127."):
                address = candidate
                break
    except (ImportError, OSError):
        pass
    _machineAddresses[family] = address
    return address


def _isLoopback(host):
    return host.startswith("127.") or host == "::1"


_HEX = b"0123456789ABCDEFabcdef"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _splitQuery(path):
    q = path.find(b"?")
    return (path, b"") if q < 0 else (path[:q], path[q:])


def normalizePath(path):
    """
    Envoy's C{normalize_path} (RFC 3986 normalisation as its URL
    canonicaliser does it): percent-encoded unreserved characters are
    decoded, other escapes get upper-case hex, backslashes become slashes,
    and C{.} and C{..} segments are removed. The query is kept as is.

    @return: the path (C{bytes}), or C{None} when it cannot be normalised.
    """
    p, query = _splitQuery(path)
    if b"%" in p:
        out = bytearray()
        i = 0
        n = len(p)
        while i < n:
            c = p[i]
            if c == 0x25 and i + 2 < n and p[i + 1] in _HEX and p[i + 2] in _HEX:
                value = int(p[i + 1:i + 3], 16)
                if value in _UNRESERVED:
                    out.append(value)
                else:
                    out += b"%" + p[i + 1:i + 3].upper()
                i += 3
                continue
            out.append(c)
            i += 1
        p = bytes(out)
    p = p.replace(b"\\", b"/")
    if not p.startswith(b"/"):
        return None
    segments = p.split(b"/")[1:]
    stack = []
    for segment in segments:
        if segment == b".":
            continue
        if segment == b"..":
            if stack:
                stack.pop()
            continue
        stack.append(segment)
    if segments and segments[-1] in (b".", b".."):
        stack.append(b"")
    return b"/" + b"/".join(stack) + query


def mergeSlashes(path):
    """Envoy's C{merge_slashes}: runs of C{/} in the path become one."""
    p, query = _splitQuery(path)
    while b"//" in p:
        p = p.replace(b"//", b"/")
    return p + query


def _hasEscapedSlash(path):
    p = _splitQuery(path)[0].lower()
    return b"%2f" in p or b"%5c" in p


def _unescapeSlashes(path):
    p, query = _splitQuery(path)
    for escaped, plain in ((b"%2F", b"/"), (b"%2f", b"/"), (b"%5C", b"\\"), (b"%5c", b"\\")):
        p = p.replace(escaped, plain)
    return p + query


# -- requests ----------------------------------------------------------------------


def mutateRequestHeaders(stream, request):
    """
    Envoy's C{mutateRequestHeaders} and friends, on the request of
    C{stream} (the connection manager's L{ActiveStream}): path
    normalisation, internal/external header cleaning, C{x-forwarded-*},
    C{via}, C{x-envoy-external-address}, C{x-request-id}, and
    C{Expect: 100-continue} answered here.

    @return: False when a local reply was sent instead.
    """
    cm = stream.cm
    config = cm.config
    # Envoy normalises the path before it touches any header, so a
    # rejected or redirected path gets no x-request-id.
    if config.needsPathWork and request.path is not None and request.path != b"*":
        if not _normalizePath(stream, request):
            return False
    headers = request.headers
    entries = headers._entries
    upgrade = request.upgrade is not None and request.upgrade != b"connect"
    internal = False
    if config.internalNetworks:
        internal = config.isInternal(_effectiveRemote(cm, entries))
        if internal:
            stream.streamInfo.filterState["envoy.internal_request"] = True
    if internal:
        strip = config.stripInternalUpgrade if upgrade else config.stripInternal
        interesting = config.interestingInternal
    else:
        strip = config.stripExternalUpgrade if upgrade else config.stripExternal
        interesting = config.interestingExternal
    xffAt = xfpAt = ridAt = viaAt = extAt = -1
    expectContinue = False
    for entry in entries:
        if entry[0] in interesting:
            break
    else:
        entry = None
    if entry is not None:
        kept = []
        for entry in entries:
            name = entry[0]
            if name in strip:
                continue
            if name in DETECTED:
                if name == b"te":
                    tokens = [t.strip().lower() for t in entry[1].split(b",")]
                    if b"trailers" not in tokens:
                        continue
                    entry = (b"te", b"trailers")
                elif name == b"x-forwarded-for":
                    xffAt = len(kept)
                elif name == b"x-forwarded-proto":
                    xfpAt = len(kept)
                elif name == b"x-request-id":
                    ridAt = len(kept)
                elif name == b"via":
                    viaAt = len(kept)
                elif name == b"x-envoy-external-address":
                    extAt = len(kept)
                elif name == b"expect":
                    if entry[1].lower() == b"100-continue":
                        expectContinue = True
                        continue
                elif name == b"x-forwarded-client-cert":
                    # Envoy's default forward_client_cert_details:
                    # SANITIZE; the other modes are mutateXfcc's.
                    if config.forwardClientCert == SANITIZE:
                        continue
            kept.append(entry)
        entries[:] = kept
    if config.stripAnyHostPort or config.stripMatchingHostPort:
        _stripPort(cm, request)
    append = entries.append
    edge = config.useRemoteAddress and not internal
    if config.useRemoteAddress:
        # Envoy appends only an IP peer: a pipe's (a Unix socket's) has none.
        if not config.skipXffAppend and cm.remoteIsIp:
            peer = cm.remoteHost
            address = (config.localAddressText if _isLoopback(peer)
                       else peer.encode("ascii"))
            if xffAt < 0:
                append((b"x-forwarded-for", address))
            else:
                entries[xffAt] = (b"x-forwarded-for", entries[xffAt][1] + b"," + address)
        if xfpAt < 0:
            append((b"x-forwarded-proto", cm.scheme))
        elif config.xffNumTrustedHops == 0:
            entries[xfpAt] = (b"x-forwarded-proto", cm.scheme)
    elif xfpAt < 0:
        append((b"x-forwarded-proto", cm.scheme))
    if config.schemeToOverwrite is not None:
        # Envoy sets both :scheme and x-forwarded-proto to it.
        request.scheme = config.schemeToOverwrite
        headers.set(b"x-forwarded-proto", config.schemeToOverwrite)
    userAgent = config.userAgent
    if userAgent is not None:
        # add_user_agent (Envoy 1.40's order: the cluster, a missing or
        # empty user-agent, the node; each set in place when present).
        headers.set(b"x-envoy-downstream-service-cluster", userAgent)
        if not headers.get(b"user-agent"):
            headers.set(b"user-agent", userAgent)
        if config.nodeName:
            headers.set(b"x-envoy-downstream-service-node", config.nodeName)
    via = config.via
    if via is not None:
        if viaAt < 0:
            append((b"via", via))
        else:
            entries[viaAt] = (b"via", entries[viaAt][1] + b", " + via)
    if edge and cm.remoteIsIp:
        # Envoy sets it from an IP peer only: a pipe's or an internal
        # listener's peer leaves the one a hop before set as it was.
        external = _externalAddress(cm, entries)
        if extAt < 0:
            append((b"x-envoy-external-address", external))
        else:
            entries[extAt] = (b"x-envoy-external-address", external)
    elif internal and config.useRemoteAddress:
        headers.set(b"x-envoy-internal", b"true")
    if config.generateRequestId:
        if ridAt < 0:
            append((b"x-request-id", requestId()))
        elif not entries[ridAt][1] or (edge and not config.preserveExternalRequestId):
            entries[ridAt] = (b"x-request-id", requestId())
    if config.forwardClientCert != SANITIZE:
        mutateXfcc(cm.connection, config, headers)
    if expectContinue:
        stream.encoder.encode100ContinueHeaders()
        cm.stats.downstream_rq_1xx.inc()
        cm.listenerStats.byClass[1].inc()
    return True


# forward_client_cert_details values.
SANITIZE, FORWARD_ONLY, APPEND_FORWARD, SANITIZE_SET, ALWAYS_FORWARD_ONLY = range(5)
_XFCC = b"x-forwarded-client-cert"


def mutateXfcc(connection, config, headers):
    """
    Envoy's C{mutateXfccRequestHeader}, after C{x-request-id}: keep, drop,
    append to or set C{x-forwarded-client-cert} by C{forward_client_cert_details},
    with C{By} (our URI SANs), C{Hash} (the client certificate's SHA-256)
    and the C{set_current_client_cert_details} (C{Cert}, C{Chain},
    C{Subject}, C{URI}, C{DNS}, in that order).
    """
    mode = config.forwardClientCert
    if mode == ALWAYS_FORWARD_ONLY:
        return
    ssl = getattr(connection, "ssl", None)
    if mode == SANITIZE or ssl is None or not getattr(ssl, "peerCertificatePresented", False):
        headers.remove(_XFCC)
        return
    if mode == FORWARD_ONLY:
        return
    details = ["By=" + uri for uri in ssl.uriSanLocalCertificate]
    digest = ssl.sha256PeerCertificateDigest
    if digest:
        details.append("Hash=" + digest)
    for detail in config.clientCertDetails:
        if detail == "Cert":
            cert = ssl.urlEncodedPemEncodedPeerCertificate
            if cert:
                details.append('Cert="%s"' % (cert,))
        elif detail == "Chain":
            chain = ssl.urlEncodedPemEncodedPeerCertificateChain
            if chain:
                details.append('Chain="%s"' % (chain,))
        elif detail == "Subject":
            details.append('Subject="%s"' % (ssl.subjectPeerCertificate,))
        elif detail == "URI":
            details.extend("URI=" + uri for uri in ssl.uriSanPeerCertificate or ("",))
        else:
            details.extend("DNS=" + name for name in ssl.dnsSansPeerCertificate)
    value = ";".join(details).encode("utf-8")
    if mode == APPEND_FORWARD:
        current = headers.get(_XFCC)
        headers.set(_XFCC, value if current is None else current + b"," + value)
    else:
        headers.set(_XFCC, value)


def _effectiveRemote(cm, entries):
    if cm.config.useRemoteAddress:
        return cm.remoteHost
    for name, value in entries:
        if name == b"x-forwarded-for":
            return value.split(b",")[-1].strip().decode("latin-1")
    return cm.remoteHost


def _externalAddress(cm, entries):
    hops = cm.config.xffNumTrustedHops
    if hops:
        for name, value in entries:
            if name == b"x-forwarded-for":
                parts = [p.strip() for p in value.split(b",")]
                # The appended peer is the last entry.
                if len(parts) > hops:
                    return parts[-1 - hops]
    return cm.remoteHost.encode("ascii")


def _stripPort(cm, request):
    authority = request.authority
    if not authority:
        return
    colon = authority.rfind(b":")
    if colon < 0 or b"]" in authority[colon:]:
        return
    if cm.config.stripMatchingHostPort:
        local = cm.connection.streamInfo.downstreamLocalAddress
        if local is None or authority[colon + 1:] != b"%d" % (local[1],):
            return
    request.authority = authority[:colon]


def _normalizePath(stream, request):
    config = stream.cm.config
    path = request.path
    action = config.escapedSlashesAction
    redirect = False
    if action != KEEP_UNCHANGED and _hasEscapedSlash(path):
        if action == REJECT_REQUEST:
            # Envoy 1.40 closes the connection after this one.
            stream.closeAfter = True
            request.path = _unescapeSlashes(path)
            stream.sendLocalReply(400, b"", None, "path_normalization_failed")
            return False
        path = _unescapeSlashes(path)
        redirect = action == UNESCAPE_AND_REDIRECT
    if config.normalizePath:
        normalized = normalizePath(path)
        if normalized is None:
            stream.sendLocalReply(400, b"", None, "path_normalization_failed")
            return False
        path = normalized
    if config.mergeSlashes:
        path = mergeSlashes(path)
    request.path = path
    if redirect:
        location = path

        def modify(response):
            response.headers.items().append((b"location", location))

        stream.sendLocalReply(307, b"", modify, "path_normalization_failed")
        return False
    return True


# -- responses ---------------------------------------------------------------------


def _movedUp(at, removed):
    """Where entry C{at} (or -1) is once the entries at C{removed} are gone."""
    if at < 0:
        return at
    before = 0
    for i in removed:
        if i < at:
            before += 1
    return at - before


def mutateResponseHeaders(config, headers, request, date, upgrade):
    """
    Envoy's C{mutateResponseHeaders}: what the connection manager does to
    every response head: C{date} (C{date} when absent), C{server}
    (C{server_header_transformation}), hop-by-hop headers (kept for an
    upgrade's 101), C{via}, C{x-request-id}
    (C{always_set_request_id_in_response}).

    @param config: the L{ConnectionManagerConfig}.
    @param headers: the L{ResponseHeaders}, changed in place.
    @param request: the L{RequestHeaders}, or C{None}.
    @param date: the current C{date} value.
    @param upgrade: the response accepts an upgrade.
    """
    entries = headers.headers._entries
    hasDate = False
    serverAt = -1
    servers = 0
    stripped = None
    viaAt = -1
    requestIdAt = -1
    i = 0
    for entry in entries:
        name = entry[0]
        if name in _RESPONSE_SPECIAL:
            if name == b"date":
                hasDate = True
            elif name == b"server":
                if serverAt < 0:
                    serverAt = i
                servers += 1
            elif name == b"via":
                viaAt = i
            elif name == b"x-request-id":
                requestIdAt = i
            elif not upgrade or (name != b"connection" and name != b"upgrade"):
                # Hop-by-hop (an upstream's connection: keep-alive, most
                # often): removed below, without a second pass.
                if stripped is None:
                    stripped = [i]
                else:
                    stripped.append(i)
        i += 1
    if stripped is not None:
        for i in reversed(stripped):
            del entries[i]
        # What followed a removed entry moved up (an origin's server comes
        # before its connection header, most often: nothing to do).
        first = stripped[0]
        if serverAt > first:
            serverAt = _movedUp(serverAt, stripped)
        if viaAt > first:
            viaAt = _movedUp(viaAt, stripped)
        if requestIdAt > first:
            requestIdAt = _movedUp(requestIdAt, stripped)
    if not hasDate:
        entries.append((b"date", date))
    transformation = config.serverHeaderTransformation
    if transformation == OVERWRITE:
        if serverAt < 0:
            entries.append((b"server", config.serverName))
        else:
            entries[serverAt] = (b"server", config.serverName)
            if servers > 1:
                tail = [e for e in entries[serverAt + 1:] if e[0] != b"server"]
                entries[serverAt + 1:] = tail
    elif transformation == APPEND_IF_ABSENT and serverAt < 0:
        entries.append((b"server", config.serverName))
    via = config.via
    if via is not None:
        if viaAt < 0:
            entries.append((b"via", via))
        else:
            entries[viaAt] = (b"via", entries[viaAt][1] + b", " + via)
    if config.alwaysSetRequestIdInResponse and request is not None:
        rid = request.headers.get(b"x-request-id")
        if rid is not None:
            if requestIdAt < 0:
                entries.append((b"x-request-id", rid))
            else:
                entries[requestIdAt] = (b"x-request-id", rid)
