# -*- test-case-name: tests.tracing.test_request_id -*-
"""
The trace decision carried in C{x-request-id}, as Envoy's
C{UUIDRequestIDExtension} packs it: the UUID's version character (offset
14) becomes C{9} (sampled), C{a} (forced by the service) or C{b} (forced by
the client), so that every Envoy a request passes through takes the same
decision.
"""

NO_TRACE = "NoTrace"
SAMPLED = "Sampled"
FORCED = "Forced"
CLIENT = "Client"

_POSITION = 14
_UUID_LENGTH = 36
_CHARS = {NO_TRACE: 0x34, SAMPLED: 0x39, FORCED: 0x61, CLIENT: 0x62}
_REASONS = {v: k for k, v in _CHARS.items()}
_HEX = frozenset(b"0123456789abcdefABCDEF")


def traceReason(requestId):
    """
    @param requestId: the C{x-request-id} value, C{bytes} or C{None}.
    @return: L{NO_TRACE}, L{SAMPLED}, L{FORCED} or L{CLIENT}.
    """
    if requestId is None or len(requestId) != _UUID_LENGTH:
        return NO_TRACE
    return _REASONS.get(requestId[_POSITION], NO_TRACE)


def withTraceReason(requestId, reason):
    """
    @return: C{requestId} with C{reason} packed in, or unchanged when it is
        not a UUID (Envoy leaves such an id alone).
    """
    if requestId is None or len(requestId) != _UUID_LENGTH:
        return requestId
    return requestId[:_POSITION] + bytes((_CHARS[reason],)) + requestId[_POSITION + 1:]


def requestIdInteger(requestId):
    """
    Envoy's C{getInteger}: the first eight hex digits of the id, the number
    random sampling decides with (modulo 10000), or C{None}.
    """
    if requestId is None or len(requestId) < 8 or not _HEX.issuperset(requestId[:8]):
        return None
    return int(requestId[:8], 16)
