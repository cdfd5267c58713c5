# -*- test-case-name: tests.http.http1.test_server_codec -*-
"""
Envoy's counted C{readDisable}, shared by the downstream codecs of both
protocols.
"""

__all__ = ["CountedReadDisable"]


class CountedReadDisable:
    """
    Mixed into a codec with C{_transport}, C{_lost} and
    C{_readDisableCount}: reading stops at the first disable and resumes
    once every disable has been matched by an enable, as Envoy's
    C{readDisable} counts them.
    """

    def readDisable(self, disable):
        """
        Stop (C{True}) or resume (C{False}) reading the connection, counted.
        The HTTP/1.1 codec uses it itself while a response is awaited.
        """
        if disable:
            self._readDisableCount += 1
            if self._readDisableCount == 1 and not self._lost:
                self._transport.pauseProducing()
        elif self._readDisableCount:
            self._readDisableCount -= 1
            if self._readDisableCount == 0 and not self._lost:
                self._transport.resumeProducing()
