# -*- test-case-name: tests.network.test_address -*-
"""
Envoy's text for a socket address (C{Address::Instance::asString}):
C{1.2.3.4:80}, and C{[::1]:80} for IPv6. One home for what logs, stats,
the admin and access logs print.
"""


def addressString(host, port):
    """C{127.0.0.1:10000}, or C{[::1]:10000} for IPv6."""
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def formatAddress(address):
    """C{("::1", 80)} -> C{"[::1]:80"}, C{("1.2.3.4", 80)} -> C{"1.2.3.4:80"}."""
    return addressString(address[0], address[1])
