# -*- test-case-name: tests.test_lifecycle -*-
"""
The one shape shared by the server's parts that were objects with
C{start()} / C{stop()} before they were services: a service whose
C{startService} and C{stopService} are those two methods, so the part
can run alone (tests, embedding) or as a child of the server.
"""

from twisted.application.service import Service


class StartStopService(Service):
    """
    A service started by its own C{start()} and stopped by its own
    C{stop()} (whose result, a Deferred or not, L{stopService} returns).
    """

    def start(self):
        """Begin the part's work; override."""

    def stop(self):
        """End the part's work; override."""

    def startService(self):
        Service.startService(self)
        self.start()

    def stopService(self):
        Service.stopService(self)
        return self.stop()
