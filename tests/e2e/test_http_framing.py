"""
Hostile HTTP/1.1 input through a real C{twistd -n envoy} and through real
Envoy 1.40, on the same config and each in front of its own origin: the
first answer, whether the connection closes, and which requests reach the
origin must be the same. Each case is a class of difference that
C{bench/differential.py} found; the codec tests in
L{tests.http.http1.test_server_codec} and L{tests.http.http1.test_client_codec} pin the
same behaviours byte for byte.
"""

import os
import socket
import sys
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import REPO, SharedFixture, Upstream
from tests.e2e.test_http import SideBySide, _Deployment

SMUGGLED = b"GET /o/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

# name -> raw request. Paths under /o/ reach the origin.
CASES = {
    # Several Transfer-Encoding headers are one list (RFC 9112): 501, and
    # the body's second request never reaches the origin.
    "teXThenChunked": b"POST /o/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "teGzipThenChunked": b"POST /o/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "teChunkedTwice": b"POST /o/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "teGzipChunked": b"POST /o/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n"
                     b"\r\n0\r\n\r\n",
    "teEmpty": b"POST /o/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n0\r\n\r\n",
    "teRepeated101": b"GET /o/t HTTP/1.1\r\nHost: a\r\n" + b"Transfer-Encoding: v\r\n" * 101 +
                     b"\r\n",
    # A bare LF ends the request line wherever it is: HTTP/0.9, 426.
    "bareLfInRequestLine": b"POST /o/c\n HTTP/1.1\r\nHost: a\r\n\r\n",
    "bareLfInPipelinedRequestLine": b"GET /o/a HTTP/1.1\r\nHost: a\r\n\r\n"
                                    b"POST /o/c\n HTTP/1.1\r\nHost: a\r\n\r\n",
    "crlfInRequestLine": b"POST /o/c\r\n HTTP/1.1\r\nHost: a\r\n\r\n",
    # Envoy reads HTAB and CR in the request line as spaces.
    "tabSeparators": b"GET\t/o/tab\tHTTP/1.1\r\nHost: a\r\n\r\n",
    "trailingWhitespace": b"GET /o/tw HTTP/1.1 \t\r\nHost: a\r\n\r\n",
    "crCrLf": b"GET /o/crcr HTTP/1.1\r\r\nHost: a\r\n\r\n",
    "fourParts": b"GET /o/a\tb HTTP/1.1\r\nHost: a\r\n\r\n",
    "badVersionForm": b"GET /o/v HTTP/01.1\r\nHost: a\r\n",
    "twoPartsEndingInHttp11": b"GET http://b.test/o/x?HTTP/1.1\r\nHost: a\r\n\r\n",
    # Methods: Envoy's list, not llhttp's.
    "mSearch": b"M-SEARCH /o/m HTTP/1.1\r\nHost: a\r\n\r\n",
    "query": b"QUERY /o/q HTTP/1.1\r\nHost: a\r\n\r\n",
    "mkactivity": b"MKACTIVITY /o/mk HTTP/1.1\r\nHost: a\r\n\r\n",
    "unknownMethodPartialHead": b"FOO /o/f HTTP/1.1\r\nHost: a\r\n",
    # Repeats of an inline header are one entry for the header count.
    "hostRepeated101": b"GET /o/h HTTP/1.1\r\n" + b"Host: a\r\n" * 101 + b"\r\n",
    "userAgentRepeated101": b"GET /o/u HTTP/1.1\r\nHost: a\r\n" + b"User-Agent: u\r\n" * 101 +
                            b"\r\n",
    "cookieRepeated101": b"GET /o/k HTTP/1.1\r\nHost: a\r\n" + b"Cookie: a=b\r\n" * 101 + b"\r\n",
    # Targets.
    "connectPath": b"CONNECT /o/c HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n" + SMUGGLED,
    "absoluteHostPercent": b"GET http://b%.test/o/p HTTP/1.1\r\nHost: a\r\n\r\n",
    "delInTarget": b"GET /o/p?q=1HTTP\x7f/1.1\r\nHost: a\r\n\r\n",
    # A head is judged once whole: until its end, nothing is answered.
    "badCharPartialHead": b"GET /o/p HTTP/1.1\r\nHost: a\x01\r\n",
    "whitespaceLineIsAFold": b"GET /o/w HTTP/1.1 \r\nHost: a \r\n \r\n",
    "badNameBeforeTe": b"POST /o/c HTTP/1.1\r\nTransfer-Encoding:\r\nHost\xff: a\r\n\r\n",
    "trailerFaultWaits": b"PUT /o/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nabc\r\n0\r\nX-T: 1\r\n5;x=\xff\r\n",
    # Values and versions.
    "expectRepeated": b"POST /o/e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                      b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    "teTrailingTab": b"PUT /o/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n"
                     b"3\r\nabc\r\n0\r\n\r\n",
    "http2WithProxyConnection": b"GET /o/p HTTP/2.0\r\nHost: a\r\n"
                                b"Proxy-Connection: keep-alive\r\n\r\n",
    "rtspVersion": b"GET /o/p RTSP/1.0\r\nHost: a\r\n\r\n",
    "absoluteHostSemicolon": b"GET http://b.tes;/o/p HTTP/1.1\r\nHost: a\r\n\r\n",
}


def outcome(port, raw, wait=2.5, settle=0.3):
    """
    Send C{raw} on a new connection; read until the connection closes, or
    is quiet for C{settle} seconds after some bytes (unless they said
    C{connection: close}: Envoy's delayed close takes up to a second), or
    C{wait} passes.

    @return: C{(status lines, closed)}; no status line is a wait (Envoy
        reads on) or a close with nothing said.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(raw)
        s.settimeout(0.05)
        data = b""
        closed = False
        deadline = time.time() + wait
        last = None
        while time.time() < deadline:
            if (last is not None and time.time() - last > settle
                    and b"\r\nconnection: close\r\n" not in data):
                break
            try:
                piece = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
            if not piece:
                closed = True
                break
            data += piece
            last = time.time()
        statuses = [line.split(b" ")[1].decode() for line in data.split(b"\r\n")
                    if line.startswith(b"HTTP/1.1 ")]
        return statuses, closed
    finally:
        s.close()


class CompareHostileInputTests(SideBySide, SynchronousTestCase):
    """Real Envoy 1.40 and txenvoy answer each case of L{CASES} alike."""

    def run1(self, deployment, raw):
        before = len(deployment.origin.requests)
        statuses, closed = outcome(deployment.port, raw)
        time.sleep(0.05)
        targets = [t for _, _, t in deployment.origin.requests[before:]]
        return {"statuses": statuses, "closed": closed, "forwarded": targets}

    def compare(self, name):
        """Send the case to both at once (each waits out Envoy's delayed close)."""
        raw = CASES[name]
        results = {}
        threads = [threading.Thread(target=lambda d=d: results.__setitem__(d, self.run1(d, raw)))
                   for d in (self.envoy, self.txenvoy)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        got = results[self.txenvoy]
        self.assertEqual(got, results[self.envoy])
        return got

    def test_teListNotLastValue(self):
        """C{x} then C{chunked}: 501, closed, nothing reaches the origin."""
        got = self.compare("teXThenChunked")
        self.assertEqual(got, {"statuses": ["501"], "closed": True, "forwarded": []})

    def test_bareLfNeverJoinsTheRequestLine(self):
        """C{POST /c\\n HTTP/1.1}: 426 and nothing forwarded."""
        got = self.compare("bareLfInRequestLine")
        self.assertEqual(got, {"statuses": ["426"], "closed": True, "forwarded": []})


def _addCases(cls):
    for name in CASES:
        def test(self, name=name):
            self.compare(name)
        test.__name__ = "test_" + name
        test.__doc__ = "Envoy 1.40 and txenvoy answer %r alike." % (name,)
        setattr(cls, test.__name__, test)
    return cls


_addCases(CompareHostileInputTests)


# Upstream responses that Envoy refuses: each answer is 502 with the
# protocol-error body, and the upstream's body never reaches the client.
UPSTREAM_CASES = {
    "teXThenChunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: x\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "teGzipThenChunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "teGzipChunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                     b"3\r\nabc\r\n0\r\n\r\n",
    "teChunkedTwice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
}


def _badUpstream(conn):
    """Answer each request with the UPSTREAM_CASES response its path names."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return
        data += piece
    name = data.split(b" ", 2)[1].rsplit(b"/", 1)[-1].decode()
    conn.sendall(UPSTREAM_CASES[name])
    time.sleep(0.3)


class CompareUpstreamFramingTests(SharedFixture, SynchronousTestCase):
    """
    An upstream that answers with several Transfer-Encoding headers, or a
    coding list: Envoy answers 502 (upstream_reset_before_response_started
    {protocol_error}); txenvoy the same, in status and body.
    """

    @classmethod
    def startFixture(cls):
        cls.deployments = []
        cls.upstreams = []
        try:
            for real in (True, False):
                d = _Deployment(real)
                cls.deployments.append(d)
                cls.upstreams.append(Upstream(_badUpstream, port=d.deadPort))
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        for u in cls.upstreams:
            u.stop()
        for d in cls.deployments:
            d.stop()

    def answer(self, d, name):
        c = d.client()
        try:
            c.send(b"GET /dead/%s HTTP/1.1\r\nhost: a\r\n\r\n" % (name.encode(),))
            r = c.read()
            return r.status, r.body
        finally:
            c.close()

    def test_sameAnswers(self):
        """Each of L{UPSTREAM_CASES}: 502 from both, the same body."""
        envoy, txenvoy = self.deployments
        for name in UPSTREAM_CASES:
            expected = self.answer(envoy, name)
            self.assertEqual(expected[0], 502, name)
            self.assertEqual(self.answer(txenvoy, name), expected, name)


class DifferentialRegressionTests(SynchronousTestCase):
    """
    A small fixed-seed run of C{bench/differential.py}: 300 mutated
    requests to real Envoy and to C{twistd -n envoy}. No input may reach
    txenvoy's origin more often than Envoy's, and few may differ at all
    (0.69% over 20,000 inputs when this was written).
    """

    def test_noLeniency(self):
        sys.path.insert(0, os.path.join(REPO, "bench"))
        try:
            import differential
        finally:
            sys.path.remove(os.path.join(REPO, "bench"))
        inputs, outcomes, envoyOrigin, txOrigin, _ = differential.run(
            300, seed=7, workers=8, timeout=1.0)
        classes = differential.classify(inputs, outcomes, envoyOrigin, txOrigin)
        lenient = {key: [inputs[i][0] for i in indexes]
                   for key, indexes in classes.items() if key[3] > key[2]}
        self.assertEqual(lenient, {})
        differing = sum(len(indexes) for indexes in classes.values())
        self.assertLessEqual(differing, 15, sorted(classes))
