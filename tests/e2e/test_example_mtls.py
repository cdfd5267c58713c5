"""
C{13-tls-mtls-upstream-tls.yaml} run unchanged from its folder (so that
C{certs/} resolves) through real Envoy 1.40 and then through txenvoy: a
client with a certificate reaches the mTLS chain by SNI; the HTTP
connection manager's C{forward_client_cert_details: SANITIZE_SET} with
C{set_current_client_cert_details: {subject, dns}} replaces the client's
own C{x-forwarded-client-cert} with C{Hash}, C{Subject} and C{DNS} of its
certificate; the request goes on over TLS to the origin. What the client
got and what the origin saw must be the same (request ids and dates
masked).
"""

import json
import os
import re
import socket
import ssl
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import EXAMPLES, Envoy, envoyBinary
from tests.e2e.test_examples_http import FixedOrigin, waitPort

CERTS = os.path.join(EXAMPLES, "certs")
CONFIG = "13-tls-mtls-upstream-tls.yaml"
PORT = 10026


def _mtlsExchange(raw):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(os.path.join(CERTS, "ca.crt.pem"))
    context.load_cert_chain(os.path.join(CERTS, "client.crt.pem"),
                            os.path.join(CERTS, "client.key.pem"))
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as plain:
        with context.wrap_socket(plain, server_hostname="mtls.example.com") as sock:
            sock.sendall(raw)
            chunks = []
            while True:
                try:
                    piece = sock.recv(65536)
                except ssl.SSLError:
                    break
                if not piece:
                    break
                chunks.append(piece)
    out = b"".join(chunks)
    head, _, body = out.partition(b"\r\n\r\n")
    head = re.sub(rb"\r\n(date|x-envoy-upstream-service-time): [^\r]*", b"", head)
    echo = json.loads(body)
    # The origin counts its connections over both runs.
    echo.pop("connection", None)
    echo["headers"] = [[n, "<uuid>" if n == "x-request-id" else v]
                       for n, v in echo["headers"]]
    return head.split(b"\r\n"), echo


REQUESTS = [
    b"GET /echo HTTP/1.1\r\nhost: mtls.example.com\r\nconnection: close\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nhost: mtls.example.com\r\nconnection: close\r\n"
    b"x-forwarded-client-cert: By=spoofed;Hash=0\r\n\r\n",
]


class MtlsExampleTests(SynchronousTestCase):

    def test_xfccSanitizeSet(self):
        """Envoy 1.40 and txenvoy send the origin the same XFCC."""
        origin = FixedOrigin(10083, tls=True)
        try:
            proc = subprocess.Popen(
                [envoyBinary(), "--disable-hot-restart", "-c", CONFIG, "--concurrency", "1",
                 "-l", "critical"], cwd=EXAMPLES, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            try:
                waitPort(proc, PORT)
                expected = [_mtlsExchange(raw) for raw in REQUESTS]
            finally:
                proc.terminate()
                proc.wait(10)
            envoy = Envoy(configPath=CONFIG, cwd=EXAMPLES,
                          args=("--concurrency", "1", "-l", "critical"))
            try:
                envoy.waitPort(PORT)
                got = [_mtlsExchange(raw) for raw in REQUESTS]
            finally:
                envoy.stop()
        finally:
            origin.stop()
        self.assertEqual(got, expected)
        xfcc = dict(expected[1][1]["headers"])["x-forwarded-client-cert"]
        self.assertRegex(xfcc, r'^Hash=[0-9a-f]{64};Subject="[^"]*";DNS=client\.example\.com$')
