"""
Memory a client can make a real C{twistd -n envoy} keep: requests whose
header names and Host values are all different and long (the keys of the
codec's header-name cache and the route table's Host cache) leave the
resident size where it was once the freed memory is returned.

C{bench/fuzz_memory.py} measures the same over 20,000 mutated requests,
against real Envoy too.
"""

import os
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import Envoy, Upstream, freePort
from tests.e2e.test_overload import originHandler, proxyConfig, readResponse
from txenvoy.extensions.resource_monitors.fixed_heap import residentBytes

# Two virtual hosts, so that the Host cache is used.
HOSTS = ('[{name: a, domains: ["a.test"], routes: [{match: {prefix: "/"}, route: {cluster: c1}}]},'
         ' {name: any, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: c1}}]}]')

REQUESTS = 400
NAME_BYTES = 12 * 1024


def rssBytes(pid):
    return residentBytes("/proc/%d/statm" % (pid,))


class RequestDataMemoryTests(SynchronousTestCase):

    def test_uniqueLongNamesAndHostsAreNotKept(self):
        """
        400 requests, each with its own 12 KiB header name and 12 KiB Host
        (about 14 MB of distinct keys): the process ends within 4 MB of
        where it started.
        """
        origin = Upstream(originHandler)
        self.addCleanup(origin.stop)
        admin, port = freePort(), freePort()
        proxy = Envoy(proxyConfig(admin, port, origin.port, virtualHosts=HOSTS),
                      adminPort=admin, args=("--concurrency", "1"))
        self.addCleanup(proxy.stop)
        proxy.waitReady()

        def request(i, unique):
            if unique:
                name = b"X-%d-" % (i,) + os.urandom(NAME_BYTES // 2).hex().encode()
                host = b"h%d-" % (i,) + os.urandom(NAME_BYTES // 2).hex().encode()
            else:
                name, host = b"X-Same", b"a.test"
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n%s: v\r\n\r\n" % (host, name))
                return readResponse(s).split(b"\r\n")[0]

        for i in range(50):
            self.assertEqual(request(i, False), b"HTTP/1.1 200 OK")
        time.sleep(6)  # one release of free memory
        before = rssBytes(proxy.proc.pid)
        for i in range(REQUESTS):
            self.assertEqual(request(i, True), b"HTTP/1.1 200 OK")
        # Kept memory would never come back; freed memory comes back at the
        # next release (every 5 s): wait for it, up to two releases.
        deadline = time.monotonic() + 11
        while True:
            after = rssBytes(proxy.proc.pid)
            if after - before < 4 << 20 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertLess(after - before, 4 << 20, (before, after))
