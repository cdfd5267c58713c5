# -*- test-case-name: tests.e2e.test_udp_proxy -*-
"""
A UDP listener on one worker (Envoy's C{ActiveUdpListener}): the worker
adopts its datagram socket (bound on the main thread, one per worker with
C{SO_REUSEPORT}) and hands each datagram to the listener's UDP listener
filters (C{envoy.filters.udp_listener}), in order.

A UDP listener filter factory has C{createUdpFilter(dispatcher,
listener)}; the filter it makes has C{onData(data, peer)} and
C{stop()}, and sends datagrams back to peers with C{listener.send(data,
peer)}.
"""

from twisted.internet.protocol import DatagramProtocol

__all__ = ["ActiveUdpListener"]


class _UdpListenerProtocol(DatagramProtocol):
    def __init__(self, active):
        self._active = active

    def datagramReceived(self, data, addr):
        for udpFilter in self._active.filters:
            udpFilter.onData(data, addr)

    def stopProtocol(self):
        for udpFilter in self._active.filters:
            udpFilter.stop()


class ActiveUdpListener:
    """
    One worker's UDP listener.

    @ivar port: the adopted datagram port (C{None} once stopped).
    @ivar protocol: the C{DatagramProtocol} of that port.
    @ivar filters: this worker's UDP listener filters.
    @ivar connections: always empty (UDP has none to drain).
    """

    port = None

    def __init__(self, dispatcher, config):
        self.dispatcher = dispatcher
        self.config = config
        self.connections = set()
        self.protocol = _UdpListenerProtocol(self)
        self.filters = [factory.createUdpFilter(dispatcher, self)
                        for factory in config.udpListenerFilters]

    def send(self, data, peer):
        """Send C{data} from the listener's address to C{peer}."""
        transport = self.protocol.transport
        if transport is None:
            return False
        try:
            transport.write(data, peer)
        except OSError:
            return False
        return True
