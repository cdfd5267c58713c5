"""
Tests for L{txenvoy.config.fields}, the helpers every config builder shares.
"""

from google.protobuf import duration_pb2
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.cluster.v3 import cluster_pb2

from txenvoy.config.errors import ConfigErrors, UnsupportedField, collectErrors
from txenvoy.config import fields
from txenvoy.config.fields import (
    checkFields,
    durationSeconds,
    refusedFields,
    setsOtherFields,
    wholeMilliseconds,
)


class CheckFieldsTests(SynchronousTestCase):

    def cluster(self):
        c = cluster_pb2.Cluster(name="a", alt_stat_name="b")
        c.connect_timeout.seconds = 1
        return c

    def test_allowedAndIgnored(self):
        """Fields allowed or harmless to ignore pass."""
        checkFields(self.cluster(), ("name", "connect_timeout"), "c", ("alt_stat_name",))

    def test_firstUnsupportedRaises(self):
        """Outside a collection the first field not allowed raises, with its path."""
        e = self.assertRaises(UnsupportedField, checkFields, self.cluster(), ("name",), "x[0]")
        self.assertEqual(e.message, "x[0].connect_timeout: unsupported field: txenvoy does "
                                    "not implement it yet")

    def test_everyUnsupportedReported(self):
        """Inside a collection every such field is reported."""
        def check():
            with collectErrors():
                checkFields(self.cluster(), ("name",), "x")
        e = self.assertRaises(ConfigErrors, check)
        self.assertEqual([x.path for x in e.errors], ["x.connect_timeout", "x.alt_stat_name"])

    def test_bootstrapPath(self):
        """The bootstrap itself has the empty path: fields are named bare."""
        e = self.assertRaises(UnsupportedField, checkFields, self.cluster(), (), "")
        self.assertEqual(e.path, "name")


class SetsOtherFieldsTests(SynchronousTestCase):
    """L{setsOtherFields}: the fast test agrees with L{checkFields}."""

    def test_agreesWithCheckFields(self):
        """
        A field outside the allowed and ignored ones is found whatever its
        kind (repeated, with presence, plain scalar), and only then.
        """
        from envoy.config.core.v3 import address_pb2

        allowed, ignored = ("address", "port_value"), ("ipv4_compat",)
        test = setsOtherFields(address_pb2.SocketAddress.DESCRIPTOR, allowed, ignored)
        for extra, other in (({}, False), ({"ipv4_compat": True}, False),
                             ({"named_port": ""}, True), ({"resolver_name": "r"}, True),
                             ({"protocol": 1}, True)):
            message = address_pb2.SocketAddress(address="a", port_value=1, **extra)
            self.assertEqual(test(message), other, extra)
            reported = []
            self.patch(fields, "report", reported.append)
            checkFields(message, allowed, "p", ignored)
            self.assertEqual(bool(reported), other, extra)
        repeated = setsOtherFields(cluster_pb2.Cluster.DESCRIPTOR, ("name",))
        self.assertFalse(repeated(cluster_pb2.Cluster(name="a")))
        self.assertTrue(repeated(cluster_pb2.Cluster(name="a", health_checks=[{}])))

    def test_keywordNames(self):
        """A field named like a Python keyword is tested too."""
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        field = descriptor_pb2.FieldDescriptorProto
        proto = descriptor_pb2.FileDescriptorProto(name="kw.proto", package="kw", syntax="proto3")
        message = proto.message_type.add(name="M")
        message.field.add(name="from", number=1, type=field.TYPE_STRING,
                          label=field.LABEL_OPTIONAL)
        message.field.add(name="in", number=2, type=field.TYPE_INT32, label=field.LABEL_REPEATED)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(proto)
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("kw.M"))
        test = setsOtherFields(cls.DESCRIPTOR, ())
        self.assertFalse(test(cls()))
        self.assertTrue(test(cls(**{"from": "a"})))
        self.assertTrue(test(cls(**{"in": [1]})))

    def test_nothingElse(self):
        """With every field allowed, no message sets another."""
        from envoy.config.core.v3 import address_pb2

        test = setsOtherFields(address_pb2.Pipe.DESCRIPTOR, ("path", "mode"))
        self.assertFalse(test(address_pb2.Pipe(path="/p", mode=1)))


class DurationTests(SynchronousTestCase):

    def test_durationSeconds(self):
        self.assertEqual(durationSeconds(duration_pb2.Duration(seconds=2, nanos=500000000)), 2.5)

    def test_wholeMilliseconds(self):
        """Envoy keeps route timeouts in whole milliseconds."""
        self.assertEqual(
            wholeMilliseconds(duration_pb2.Duration(seconds=1, nanos=2999999)), 1.002)


class RefusedFieldsTests(SynchronousTestCase):
    """L{refusedFields}: what the docs' table lists as refused."""

    def test_refused(self):
        """The message's fields its builders did not declare, sorted."""
        from envoy.config.core.v3 import address_pb2

        self.patch(fields, "_declared", {})
        checkFields(address_pb2.SocketAddress(address="a"), ("address", "port_value"), "p")
        self.assertEqual(refusedFields("envoy.config.core.v3.SocketAddress"),
                         ["ipv4_compat", "named_port", "network_namespace_filepath",
                          "protocol", "resolver_name"])

    def test_neverBuilt(self):
        """A type no builder declared, or an unknown one, has no answer."""
        self.assertIsNone(refusedFields("no.such.Type"))
