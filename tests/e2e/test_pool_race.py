"""
The idle-close race through a real C{twistd -n envoy}: an origin closes
each keep-alive connection a few milliseconds after its response while
requests arrive around that moment (L{tests.e2e.closing_origin}). Nothing
may be lost without an answer, nothing may reach the reactor as an
unhandled error, and a request that is safe to send twice is not failed
for a connection the host had closed as idle. The 1,000-trial run, with
real Envoy beside it, is C{bench/pool_race.py}.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.closing_origin import ClosingOrigin, raceConfig, runRace
from tests.e2e.harness import Envoy, SharedFixture, freePort

TRIALS = 100


class _Race(SharedFixture):
    """One origin and one txenvoy for the class."""

    perConnection = 1

    @classmethod
    def startFixture(cls):
        cls.origin = ClosingOrigin(perConnection=cls.perConnection)
        cls.port, cls.adminPort = freePort(), freePort()
        try:
            cls.proxy = Envoy(raceConfig(cls.port, cls.adminPort, cls.origin.port),
                              args=("--concurrency", "1"), adminPort=cls.adminPort)
            cls.proxy.waitPort(cls.port)
        except BaseException:
            cls.origin.stop()
            raise

    @classmethod
    def stopFixture(cls):
        try:
            cls.proxy.stop()
        finally:
            cls.origin.stop()

    def tearDown(self):
        out, err = self.proxy.output()
        self.assertNotIn("Traceback", out + err)
        self.assertNotIn("Unhandled", out + err)
        super().tearDown()

    def stats(self):
        return {name.split(".", 2)[2]: value for name, value in self.proxy.stats().items()
                if name.startswith("cluster.origin.")}


class CloseAfterEachResponseTests(_Race, SynchronousTestCase):
    """The origin closes every connection 0-3 ms after its one response."""

    def test_getNeverFails(self):
        """
        Every GET is answered 200: one that met a connection the host had
        just closed is sent again on a fresh one.
        """
        before = self.stats()
        result = runRace(self.port, TRIALS)
        self.assertEqual((result.codes, result.silent), ({200: TRIALS}, 0))
        after = self.stats()
        destroyed = after["upstream_cx_destroy"] - before["upstream_cx_destroy"]
        self.assertGreater(destroyed, 0)
        # Envoy: the host closed every one of them.
        self.assertEqual(after["upstream_cx_destroy_remote"] - before["upstream_cx_destroy_remote"],
                         destroyed)
        self.assertEqual(after["upstream_cx_destroy_local"], before["upstream_cx_destroy_local"])

    def test_postAnsweredOrFailed(self):
        """
        A POST is never sent twice: one lost to the race is answered 503,
        as Envoy answers it, and counted in
        upstream_cx_destroy_remote_with_active_rq. None is left without a
        response.
        """
        before = self.stats()
        result = runRace(self.port, TRIALS, method=b"POST")
        self.assertEqual(result.silent, 0)
        self.assertEqual(set(result.codes) - {200, 503}, set())
        after = self.stats()
        self.assertEqual(
            after["upstream_cx_destroy_remote_with_active_rq"]
            - before["upstream_cx_destroy_remote_with_active_rq"],
            result.codes.get(503, 0))


class IdleCloseTests(_Race, SynchronousTestCase):
    """The origin keeps a connection alive and closes it after 0-3 ms idle."""

    perConnection = 1000000

    def test_getNeverFails(self):
        result = runRace(self.port, TRIALS)
        self.assertEqual((result.codes, result.silent), ({200: TRIALS}, 0))
        self.assertLess(self.origin.connections, TRIALS)
