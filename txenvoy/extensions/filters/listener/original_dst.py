# -*- test-case-name: tests.extensions.filters.listener.test_original_dst -*-
"""
C{envoy.filters.listener.original_dst}: for a connection redirected by
iptables (C{REDIRECT} / C{DNAT}), restores the destination the client
really asked for, read from the kernel with C{SO_ORIGINAL_DST}, as the
connection's local address. Filter chain matching and an C{ORIGINAL_DST}
cluster then see that address.

A connection that was not redirected has no original destination (the
kernel answers C{ENOENT}); its local address stays as it is.
"""

import socket
import struct

from zope.interface import implementer

from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import IListenerFilter, IListenerFilterFactory

#: C{SO_ORIGINAL_DST} (C{linux/netfilter_ipv4.h}), read at C{SOL_IP}.
SO_ORIGINAL_DST = 80
#: C{IP6T_SO_ORIGINAL_DST} (C{linux/netfilter_ipv6/ip6_tables.h}), at C{SOL_IPV6}.
IP6T_SO_ORIGINAL_DST = 80
SOL_IP = getattr(socket, "SOL_IP", 0)
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)

_SOCKADDR_IN_LEN = 16
_SOCKADDR_IN6_LEN = 28


def originalDestination(sock):
    """
    Ask the kernel for the pre-NAT destination of an accepted socket.

    @param sock: a C{socket.socket} (or anything with C{family} and
        C{getsockopt}).
    @return: C{(host, port)}, or C{None} when there is none (not redirected,
        not Linux, not an IP socket).
    """
    try:
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, _SOCKADDR_IN_LEN)
            port, addr = struct.unpack("!2xH4s8x", raw[:_SOCKADDR_IN_LEN])
            return socket.inet_ntop(socket.AF_INET, addr), port
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, _SOCKADDR_IN6_LEN)
            port, addr = struct.unpack("!2xH4x16s4x", raw[:_SOCKADDR_IN6_LEN])
            return socket.inet_ntop(socket.AF_INET6, addr), port
    except (OSError, struct.error, ValueError):
        return None
    return None


@implementer(IListenerFilter)
class OriginalDstFilter:
    """Restores one connection's original destination, on accept."""

    maxReadBytes = 0

    def __init__(self, connection):
        self._connection = connection

    def onAccept(self, callbacks):
        getHandle = getattr(self._connection.transport, "getHandle", None)
        if getHandle is not None:
            original = originalDestination(getHandle())
            if original is not None:
                callbacks.restoreLocalAddress(original)
        return True

    def onData(self, data):
        return True


@implementer(IListenerFilterFactory)
class OriginalDstConfig:
    """A compiled C{OriginalDst} (it has no fields)."""

    def buildListenerFilter(self, connection):
        return OriginalDstFilter(connection)


@extension(Category.LISTENER_FILTER,
           "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
           "envoy.filters.listener.original_dst")
def createOriginalDst(message, context):
    """Build an L{OriginalDstConfig}."""
    return OriginalDstConfig()
