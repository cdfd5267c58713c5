"""
End-to-end tests of Envoy's regexes (RE2) through a real C{twistd -n envoy}
and a real Envoy 1.40 with the same config: routes and header matchers
answer the same, a pattern that would stall a backtracking engine costs
nothing, and config patterns are checked as Envoy checks them.
"""

import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.configs import bootstrap, httpListener
from tests.e2e.harness import Envoy, RealEnvoy, SharedFixture, freePort, runTwistd

CONFIG = bootstrap(
    listeners=[
        httpListener("l", "%(port)d", statPrefix="rx", virtualHosts="""
            - name: v
              domains: ["*"]
              routes:
              - match: {safe_regex: {regex: "/(a+)+b"}}
                direct_response: {status: 200, body: {inline_string: nested}}
              - match: {prefix: "/letter", headers: [{name: x-h, string_match: {safe_regex: {regex: '\\pL'}}}]}
                direct_response: {status: 200, body: {inline_string: letter}}
              - match: {safe_regex: {regex: '/[[:^alpha:]]+'}}
                direct_response: {status: 200, body: {inline_string: posix}}
              - match: {prefix: "/"}
                direct_response: {status: 404, body: {inline_string: none}}
            """),
    ],
    admin=None)


def request(port, path, *headers):
    """One GET on a fresh connection: C{(status line, body, seconds)}."""
    lines = [b"GET " + path + b" HTTP/1.1", b"host: example.com"]
    lines.extend(headers)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith((b"nested", b"letter", b"posix",
                                                            b"none")):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    elapsed = time.perf_counter() - started
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body, elapsed


class RegexRoutesTests(SharedFixture, SynchronousTestCase):
    """The same regex routes through txenvoy and Envoy 1.40."""

    @classmethod
    def startFixture(cls):
        cls.txPort, cls.envoyPort = freePort(), freePort()
        cls.tx = Envoy(CONFIG % {"port": cls.txPort}, args=("--concurrency", "1"))
        cls.envoy = None
        try:
            cls.envoy = RealEnvoy(CONFIG % {"port": cls.envoyPort})
            cls.tx.waitPort(cls.txPort)
            cls.envoy.waitPort(cls.envoyPort)
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        cls.tx.stop()
        if cls.envoy is not None:
            cls.envoy.stop()

    def both(self, path, *headers):
        tx = request(self.txPort, path, *headers)
        envoy = request(self.envoyPort, path, *headers)
        self.assertEqual(tx[:2], envoy[:2])
        return tx

    def test_nestedQuantifierIsLinear(self):
        """
        C{/(a+)+b} against 30 C{a}s: no match, answered at once (a
        backtracking engine walks 2**30 paths here), as Envoy answers.
        """
        status, body, elapsed = self.both(b"/" + b"a" * 30)
        self.assertEqual((status, body), (b"HTTP/1.1 404 Not Found", b"none"))
        self.assertLess(elapsed, 5.0)
        self.assertEqual(self.both(b"/aaab")[1], b"nested")

    def test_unicodeClass(self):
        """
        C{\\pL} is accepted and reads header bytes as Latin-1, as Envoy
        1.40 does.
        """
        self.assertEqual(self.both(b"/letter", b"x-h: a")[1], b"letter")
        self.assertEqual(self.both(b"/letter", b"x-h: \xe9")[1], b"letter")
        self.assertEqual(self.both(b"/letter", "x-h: é".encode())[1], b"none")
        self.assertEqual(self.both(b"/letter", b"x-h: 1")[1], b"none")

    def test_negatedPosixClass(self):
        """
        C{[[:^alpha:]]} works.
        """
        self.assertEqual(self.both(b"/123")[1], b"posix")
        self.assertEqual(self.both(b"/12a")[1], b"none")


class RegexConfigTests(SynchronousTestCase):
    """Config patterns checked as Envoy checks them."""

    def validate(self, config):
        return runTwistd(["--mode", "validate", "--config-yaml", config])

    def test_programSizeLimit(self):
        """
        A route regex whose RE2 program is over 100 is refused with
        Envoy's message and the field path.
        """
        config = CONFIG.replace("/(a+)+b", "a{1000}") % {"port": freePort()}
        rc, out, err = self.validate(config)
        self.assertEqual(rc, 1)
        self.assertIn("regex 'a{1000}' RE2 program size of 1004 > max program size of 100 set "
                      "for the error level threshold", out + err)
        self.assertIn("routes[0].match.safe_regex.regex", out + err)
        self.assertNotIn("Traceback", out + err)

    def test_programSizeFromRuntime(self):
        """
        The runtime's C{re2.max_program_size.error_level} raises the limit.
        """
        config = CONFIG.replace("/(a+)+b", "a{1000}") % {"port": freePort()} + """
layered_runtime:
  layers:
  - name: s
    static_layer: {re2.max_program_size.error_level: 2000}
"""
        rc, out, err = self.validate(config)
        self.assertEqual((rc, err), (0, ""), out)

    def test_headerKeyWithNewline(self):
        """
        A header key ending in a newline fails protoc-gen-validate's
        pattern as in Envoy (RE2's C{$} is the end of the text).
        """
        config = CONFIG.replace(
            '- match: {prefix: "/"}',
            '- match: {prefix: "/"}\n'
            '                request_headers_to_add: [{header: {key: "x-foo\\n", value: v}}]'
        ) % {"port": freePort()}
        rc, out, err = self.validate(config)
        self.assertEqual(rc, 1, out + err)
        self.assertIn('HeaderValueValidationError.Key: value does not match regex pattern '
                      '"^[^\\x00\\n\\r]*$"', out + err)
