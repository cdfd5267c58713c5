# -*- test-case-name: tests.network.test_address -*-
"""
Envoy's text for a socket address (C{Address::Instance::asString}):
C{1.2.3.4:80}, and C{[::1]:80} for IPv6. One home for what logs, stats,
the admin and access logs print.
"""

import socket

from twisted.internet.address import IPv4Address, IPv6Address


def addressString(host, port):
    """
    C{127.0.0.1:10000}, or C{[::1]:10000} for IPv6; a host that is a
    L{txenvoy.network.pipe.PipeAddress} is its path, as Envoy prints it.
    """
    if not isinstance(host, str):
        return str(host)
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def formatAddress(address):
    """
    C{("::1", 80)} -> C{"[::1]:80"}, C{("1.2.3.4", 80)} -> C{"1.2.3.4:80"};
    a L{txenvoy.network.pipe.PipeAddress} is its path.
    """
    if not isinstance(address, tuple):
        return str(address)
    return addressString(address[0], address[1])


def parseInternetAddressAndPort(text):
    """
    Envoy's C{Utility::parseInternetAddressAndPortNoThrow}: C{1.2.3.4:80}
    or C{[::1]:80} as C{(ip, port)}.

    @param text: C{str}.
    @return: C{(ip, port)}, or C{None} when C{text} is not an IP address
        and a decimal port up to 65535 (a name, a missing or bad port).
    """
    if text.startswith("["):
        close = text.find("]:")
        if close < 0:
            return None
        host, port, family = text[1:close], text[close + 2:], socket.AF_INET6
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            return None
        family = socket.AF_INET
    if not port.isdigit() or not port.isascii() or int(port) > 65535:
        return None
    try:
        socket.inet_pton(family, host)
    except (OSError, ValueError):
        return None
    return host, int(port)


def addressTuple(address):
    """
    The C{(host, port)} of a Twisted address; a Unix one (Envoy's pipe) is
    C{(PipeAddress, 0)}, printed as its path (C{""} when unnamed); an
    internal connection's end is C{(InternalAddress, 0)}.
    """
    if type(address) in _IP_ADDRESSES:
        return (address.host, address.port)
    from txenvoy.network.user_space import InternalAddress

    if isinstance(address, InternalAddress):
        return (address, 0)
    name = getattr(address, "name", _NO_NAME)
    if name is not _NO_NAME:
        from txenvoy.network.pipe import PipeAddress, pipeName

        return (PipeAddress(pipeName(name)), 0)
    return (address.host, address.port)


_NO_NAME = object()
#: Twisted's TCP addresses: every accepted connection has two.
_IP_ADDRESSES = frozenset([IPv4Address, IPv6Address])
