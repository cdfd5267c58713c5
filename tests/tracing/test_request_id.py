"""
Tests for L{txenvoy.tracing.request_id}: the trace decision packed into
C{x-request-id} as Envoy's UUID request id extension packs it.
"""

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.tracing import request_id

RID = b"8cbac7d3-d72a-46d7-92f4-8a7e5111301f"


class TraceReasonTests(SynchronousTestCase):

    def test_versionCharacterCarriesTheReason(self):
        """Envoy writes 9 (sampled), a (forced), b (client) at offset 14; 4 is none."""
        for reason, char in ((request_id.SAMPLED, b"9"), (request_id.FORCED, b"a"),
                             (request_id.CLIENT, b"b"), (request_id.NO_TRACE, b"4")):
            packed = request_id.withTraceReason(RID, reason)
            self.assertEqual(packed[14:15], char)
            self.assertEqual(packed[:14] + packed[15:], RID[:14] + RID[15:])
            self.assertEqual(request_id.traceReason(packed), reason)

    def test_notAUuid(self):
        """An id that is not 36 characters long is neither read nor changed."""
        self.assertEqual(request_id.traceReason(b"abc"), request_id.NO_TRACE)
        self.assertEqual(request_id.traceReason(None), request_id.NO_TRACE)
        self.assertEqual(request_id.withTraceReason(b"abc", request_id.SAMPLED), b"abc")

    def test_integerIsTheFirstEightHexDigits(self):
        """Envoy's getInteger: random sampling decides on int(id[:8], 16)."""
        self.assertEqual(request_id.requestIdInteger(RID), 0x8cbac7d3)
        self.assertIsNone(request_id.requestIdInteger(b"zzzzzzzz-1"))
        self.assertIsNone(request_id.requestIdInteger(b"+1234567-1"))
        self.assertIsNone(request_id.requestIdInteger(b"1234"))
