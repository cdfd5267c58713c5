# -*- test-case-name: tests.extensions.filters.network.test_direct_response -*-
"""
C{envoy.filters.network.direct_response}: writes fixed bytes to every new
connection, then closes it (after the bytes are flushed).
"""

from twisted.internet.protocol import Protocol
from zope.interface import implementer

from txenvoy.config.datasource import readDataSource
from txenvoy.config.registry import Category, extension
from txenvoy.interfaces import INetworkFilterFactory


class DirectResponseFilter(Protocol):
    """Answers and closes; anything the client sends is ignored."""

    def __init__(self, response):
        self._response = response

    def connectionMade(self):
        if self._response:
            self.transport.write(self._response)
        self.transport.loseConnection()


@implementer(INetworkFilterFactory)
class DirectResponseFactory:
    terminal = True

    def __init__(self, response):
        self.response = response

    def buildFilter(self, connection, nextProtocol):
        return DirectResponseFilter(self.response)


@extension(Category.NETWORK_FILTER,
           "envoy.extensions.filters.network.direct_response.v3.Config",
           "envoy.filters.network.direct_response")
def createDirectResponse(message, context):
    return DirectResponseFactory(
        readDataSource(message.response, context.configPath + ".response"))
