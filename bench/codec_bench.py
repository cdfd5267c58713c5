"""
Micro-benchmark of the downstream HTTP/1.1 codec: 100,000 pipelined small
GET requests through L{txenvoy.http.http1.server_codec.ServerCodec}, answered by a
trivial decoder with a 200 and a 2-byte body. Not a test.

    python bench/codec_bench.py [--requests N] [--chunk BYTES]

Prints requests/s for input fed in 64 KiB reads (what a Twisted TCP
transport delivers) and fed one request per read, by wall-clock time and by
the process's CPU time (steadier on a shared machine).
"""

import argparse
import gc
import time

from txenvoy.http.http1.server_codec import ServerCodec
from txenvoy.http.headers import HeaderMap, ResponseHeaders

REQUEST = (
    b"GET /items/587?x=1 HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"User-Agent: bench/1.0\r\n"
    b"Accept: */*\r\n"
    b"X-Request-Id: 1234567890\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)


class CountingTransport:
    """Just enough of a transport: counts what is written."""

    def __init__(self):
        self.written = 0
        self.writes = 0

    def write(self, data):
        self.written += len(data)
        self.writes += 1

    def writeSequence(self, seq):
        for data in seq:
            self.write(data)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def loseConnection(self):
        raise AssertionError("the benchmark connection must stay open")


class OkResponder:
    """Callbacks and decoder at once: answers every request 200 "ok"."""

    RESPONSE = ResponseHeaders(200, HeaderMap([(b"content-length", b"2")]))

    def __init__(self):
        self.encoder = None
        self.requests = 0

    def newStream(self, encoder):
        self.encoder = encoder
        return self

    def onCodecError(self, status, details):
        raise AssertionError("codec error %s %s" % (status, details))

    def decodeHeaders(self, headers, endStream):
        self.requests += 1
        if endStream:
            self.encoder.encodeHeaders(self.RESPONSE, False)
            self.encoder.encodeData(b"ok", True)

    def decodeData(self, data, endStream):
        pass


def run(requests, chunkSize):
    """
    Feed C{requests} requests in reads of C{chunkSize} bytes (0: one
    request per read).

    @return: C{(requests per wall-clock second, requests per CPU second)}.
    """
    responder = OkResponder()
    transport = CountingTransport()
    codec = ServerCodec(responder, transport)
    if chunkSize:
        stream = REQUEST * requests
        chunks = [stream[i:i + chunkSize] for i in range(0, len(stream), chunkSize)]
    else:
        chunks = [REQUEST] * requests
    gc.collect()
    start = time.perf_counter()
    cpuStart = time.process_time()
    feed = codec.dataReceived
    for chunk in chunks:
        feed(chunk)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpuStart
    assert responder.requests == requests, responder.requests
    expected = len(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok") * requests
    assert transport.written == expected, (transport.written, expected)
    return requests / elapsed, requests / cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--requests", type=int, default=100000)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for label, chunk in (("%d-byte reads" % args.chunk, args.chunk),
                         ("one request per read", 0)):
        results = [run(args.requests, chunk) for _ in range(args.rounds)]
        wall = max(r[0] for r in results)
        cpu = max(r[1] for r in results)
        print("%-22s %9.0f requests/s wall, %9.0f requests/CPU-s "
              "(%d requests, best of %d)" % (label, wall, cpu, args.requests, args.rounds))


if __name__ == "__main__":
    main()
