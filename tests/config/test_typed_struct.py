"""
Tests for L{txenvoy.config.typed_struct}: an extension written as a
C{TypedStruct} whose C{type_url} names a protobuf type is read as that
message, as Envoy's C{translateOpaqueConfig} does, and every mistake in it
is reported at its path inside the struct's C{value}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from txenvoy.config import registry, typed_struct
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap, parseDict
from txenvoy.server.server import Server

HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
FILTER = "static_resources.listeners[0].filter_chains[0].filters[0]"


def _config(value, struct="xds.type.v3.TypedStruct", typeName=HCM):
    """A bootstrap whose one listener's HCM is written as a TypedStruct."""
    return """
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/%s
          type_url: type.googleapis.com/%s
          value:
%s
""" % (struct, typeName, "\n".join("            " + line for line in value.splitlines()))


HCM_VALUE = """\
stat_prefix: ingress_http
codec_type: auto
stream_idle_timeout: {seconds: 30}
route_config:
  name: r
  virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200}}]}]
http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
"""


class TypedStructConfigTests(SynchronousTestCase):

    def build(self, text):
        return Server(Clock(), loadBootstrap(None, text), validateOnly=True)

    def assertError(self, text, *phrases):
        error = self.assertRaises(ConfigError, self.build, text)
        for phrase in phrases:
            self.assertIn(phrase, error.message)
        self.assertNotIn("Traceback", error.message)
        return error

    def test_hcmAsTypedStruct(self):
        """
        Envoy's C{with-type-url} examples: the HCM wrapped in an
        C{xds.type.v3.TypedStruct} builds as the direct form does, with
        Envoy's leniencies (a lower-case enum, a duration object).
        """
        server = self.build(_config(HCM_VALUE))
        self.assertEqual(len(server.listenerManager.listeners), 1)

    def test_udpaTypedStruct(self):
        """The older C{udpa.type.v1.TypedStruct} is read the same way."""
        self.build(_config(HCM_VALUE, struct="udpa.type.v1.TypedStruct"))

    def test_unknownFieldInValue(self):
        """Envoy refuses an unknown field inside the struct; the path is inside C{value}."""
        self.assertError(_config(HCM_VALUE + "bogus: 1\n"),
                         FILTER + ".typed_config.value", "no such field: 'bogus'")

    def test_malformedValue(self):
        """A value of the wrong JSON shape is a parse error at its path."""
        self.assertError(_config(HCM_VALUE.replace("codec_type: auto", "codec_type: [1]")),
                         FILTER + ".typed_config.value.codec_type")

    def test_valueNotAStruct(self):
        """
        A C{value} that is not a struct at all (Envoy: C{message
        google.protobuf.Struct ... unexpected character}) is one error at
        C{<path>.value}, not one more for the message it would have been.
        """
        text = _config("").replace("          value:\n", "          value: 5\n")
        error = self.assertError(text, FILTER + ".typed_config.value",
                                 "google.protobuf.Struct")
        self.assertEqual(error.message.count("unexpected character"), 1)

    def test_validationInsideValue(self):
        """
        The message's PGV rules hold inside the struct, with Envoy's phrase
        (C{HttpConnectionManagerValidationError.StatPrefix}).
        """
        self.assertError(
            _config(HCM_VALUE.replace("stat_prefix: ingress_http", 'stat_prefix: ""')),
            "HttpConnectionManagerValidationError.StatPrefix",
            FILTER + ".typed_config.value.stat_prefix")

    def test_unsupportedFieldInsideValue(self):
        """A field txenvoy refuses is refused with its path inside the struct."""
        self.assertError(_config(HCM_VALUE + "proxy_100_continue: true\n"),
                         FILTER + ".typed_config.value.proxy_100_continue: unsupported field")

    def test_unknownTypeUrl(self):
        """
        A C{type_url} naming no extension is refused by name (Envoy:
        C{Didn't find a registered implementation}), never a traceback.
        """
        self.assertError(_config(HCM_VALUE, typeName=HCM + "Nope"),
                         FILTER + ".typed_config.type_url", HCM + "Nope")

    def test_wellKnownTypeUrl(self):
        """A TypedStruct cannot stand for a well-known type; said at its C{type_url}."""
        self.assertError(_config("{}", typeName="google.protobuf.Duration"),
                         FILTER + ".typed_config.type_url", "google.protobuf.Duration")


class UnwrapTests(SynchronousTestCase):

    def struct(self, typeName, value):
        from xds.type.v3 import typed_struct_pb2

        return parseDict({"type_url": "type.googleapis.com/" + typeName, "value": value},
                         typed_struct_pb2.TypedStruct())

    def test_knownType(self):
        """A known C{type_url} becomes that message, at C{<path>.value}."""
        message, path = typed_struct.unwrap(self.struct(HCM, {"stat_prefix": "a"}), "p")
        self.assertEqual(message, http_connection_manager_pb2.HttpConnectionManager(
            stat_prefix="a"))
        self.assertEqual(path, "p.value")

    def test_schemaless(self):
        """A C{type_url} naming no protobuf type stays a struct."""
        struct = self.struct("my.pkg.Thing", {"a": 1})
        self.assertIs(typed_struct.unwrap(struct, "p")[0], struct)

    def test_badValue(self):
        """A value that is not the message's JSON is a L{ConfigError} at C{<path>.value}."""
        e = self.assertRaises(ConfigError, typed_struct.toMessage,
                              self.struct(HCM, {"nope": 1}), "p")
        self.assertIn("@ p.value", e.message)

    def test_unpackAny(self):
        """
        L{registry.unpackAny} and L{registry.typeNameOf} see through a
        TypedStruct, for the builders that read an C{Any} themselves.
        """
        from google.protobuf import any_pb2

        any_ = any_pb2.Any()
        any_.Pack(self.struct(HCM, {"stat_prefix": "a"}))
        self.assertEqual(registry.typeNameOf(any_), HCM)
        self.assertEqual(registry.unpackAny(any_, "p").stat_prefix, "a")
