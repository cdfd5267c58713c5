# -*- test-case-name: tests.extensions.filters.network.test_echo -*-
"""
C{envoy.filters.network.echo}: writes back every byte it reads.
"""

from twisted.internet.protocol import Protocol
from zope.interface import implementer

from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import INetworkFilterFactory


class EchoFilter(Protocol):
    """The echo terminal filter for one connection."""

    def dataReceived(self, data):
        self.transport.write(data)


@implementer(INetworkFilterFactory)
class EchoFactory:
    terminal = True

    def buildFilter(self, connection, nextProtocol):
        return EchoFilter()


@extension(Category.NETWORK_FILTER, "envoy.extensions.filters.network.echo.v3.Echo",
           "envoy.filters.network.echo")
def createEcho(message, context):
    return EchoFactory()
