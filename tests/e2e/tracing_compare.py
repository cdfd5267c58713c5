"""
What the tracing comparisons with real Envoy share: YAML pieces, one proxy
(real Envoy or a real C{twistd envoy}) with its own receiver and origin,
and a fixture that sends both proxies the same requests and waits for
their spans.
"""

import urllib.error
import urllib.request

from tests.e2e.collectors import RecordingOrigin
from tests.e2e.harness import DeadPort, freePort, startProxy


#: The one virtual host of the telemetry tests' simplest listeners.
ORIGIN_HOST = '- name: vh\n  domains: ["*"]\n  routes: [{match: {prefix: "/"}, route: {cluster: origin}}]\n'


def listenerYaml(name, port, hcm, direction=""):
    """A listener on 127.0.0.1 whose one filter chain is C{hcm}."""
    return """\
  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
%s    filter_chains:
    - filters:
%s""" % (name, port, direction, hcm)


class TracingProxy:
    """
    One proxy (real Envoy or txenvoy), its receiver and its origin.

    @param makeConfig: C{makeConfig(ports, receiverPort, originPort,
        deadPort)}, the YAML; C{ports} has C{admin}, C{dead} and each of
        C{listeners}.
    """

    def __init__(self, real, receiver, makeConfig, listeners=("ingress", "egress")):
        self.receiver = receiver
        self.origin = RecordingOrigin()
        self._dead = DeadPort()
        self.deadPort = self._dead.port
        self.ports = {k: freePort() for k in ("admin", "dead") + tuple(listeners)}
        config = makeConfig(self.ports, receiver.port, self.origin.port, self.deadPort)
        try:
            self.proc = startProxy(real, config, self.ports["dead"], self.ports["admin"])
            for name in listeners:
                self.proc.waitPort(self.ports[name])
        except BaseException:
            self.receiver.stop()
            self.origin.stop()
            self._dead.close()
            raise

    def get(self, listener, path, headers):
        """@return: C{(status, headers, body)}, the whole response read."""
        request = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.ports[listener], path), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers.items()), e.read()

    def stop(self):
        try:
            self.proc.stop()
        finally:
            self.receiver.stop()
            self.origin.stop()
            self._dead.close()


class ComparisonFixture:
    """
    A L{tests.e2e.harness.SharedFixture} mixin: real Envoy and txenvoy, the
    same C{CASES} (C{(case, listener, path, headers, spans expected)}, the
    case named in C{x-case}), then three requests to the dead-collector
    listener; C{responses[proxy, case]} and C{spans[proxy]} hold what came
    back.
    """

    CASES = ()

    @classmethod
    def makeProxy(cls, real):
        raise NotImplementedError()

    @classmethod
    def startFixture(cls):
        cls.envoy = cls.makeProxy(True)
        try:
            cls.txenvoy = cls.makeProxy(False)
        except BaseException:
            cls.envoy.stop()
            raise
        try:
            cls.responses = {}
            for proxy in (cls.envoy, cls.txenvoy):
                for case, listener, path, headers, _ in cls.CASES:
                    cls.responses[proxy, case] = proxy.get(
                        listener, path, dict(headers, **{"x-case": case}))
                for _ in range(3):
                    cls.responses[proxy, "dead"] = proxy.get("dead", "/", {})
            total = sum(c[-1] for c in cls.CASES)
            cls.spans = {proxy: proxy.receiver.waitSpans(total)
                         for proxy in (cls.envoy, cls.txenvoy)}
        except BaseException:
            cls.stopFixture()
            raise

    @classmethod
    def stopFixture(cls):
        try:
            cls.envoy.stop()
        finally:
            cls.txenvoy.stop()

    def test_spanCount(self):
        """Both proxies report the same number of spans for the same requests."""
        total = sum(c[-1] for c in self.CASES)
        self.assertEqual(len(self.spans[self.envoy]), total)
        self.assertEqual(len(self.spans[self.txenvoy]), total)


def addCaseTests(cls, shape):
    """
    One test per case: C{shape(proxy, spans, case)} the same for Envoy
    1.40 and txenvoy.
    """
    for case in cls.CASES:
        def test(self, case=case):
            self.assertEqual(shape(self.txenvoy, self.spans[self.txenvoy], case),
                             shape(self.envoy, self.spans[self.envoy], case))
        test.__name__ = "test_case_" + case[0].replace("-", "_")
        test.__doc__ = ("Envoy 1.40 and txenvoy make the same spans and upstream trace "
                        "headers for the %r request." % (case[0],))
        setattr(cls, test.__name__, test)
    return cls
