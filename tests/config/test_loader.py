"""
Tests for L{txenvoy.config.loader} and L{txenvoy.config.protos}.

Each behaviour copied from Envoy 1.40 says which Envoy behaviour it pins;
the phrases come from running C{envoy --mode validate} on the same input.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config import protos
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap, parseDict, parseYaml, readConfigFile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROUTER = (
    "{name: envoy.filters.http.router, typed_config: "
    "{'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}")

MINIMAL = """\
static_resources:
  clusters:
  - name: c1
    connect_timeout: 1s
"""


class LoaderTestMixin:
    """Helpers shared by the loader tests."""

    def tempDir(self):
        """A fresh directory, removed after the test."""
        path = tempfile.mkdtemp(prefix="txenvoy-loader-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def writeFile(self, content, suffix=".yaml", mode="w"):
        path = os.path.join(self.tempDir(), "config" + suffix)
        with open(path, mode) as f:
            f.write(content)
        return path

    def assertConfigError(self, *phrases, **kwargs):
        """
        Load with C{kwargs}, expect a L{ConfigError} whose message holds
        every phrase, and return the message.
        """
        error = self.assertRaises(ConfigError, loadBootstrap, **kwargs)
        for phrase in phrases:
            self.assertIn(phrase, error.message)
        self.assertNotIn("\n", error.message)
        return error.message


class NoConfigTests(LoaderTestMixin, SynchronousTestCase):
    """What to load when nothing is given, or the file is not there."""

    def test_nothingGiven(self):
        """
        Neither -c nor --config-yaml: the message names both flags in the
        user's terms (Envoy's own mentions its C++ C{Options::configProto()}).
        """
        error = self.assertRaises(ConfigError, loadBootstrap)
        self.assertEqual(
            error.message,
            "no config given: pass -c/--config-path FILE (an Envoy v3 bootstrap, YAML or "
            "JSON) or --config-yaml TEXT")

    def test_emptyStrings(self):
        """
        Empty strings count as not given, as in Envoy.
        """
        error = self.assertRaises(ConfigError, loadBootstrap, configPath="", configYaml="")
        self.assertIn("no config given", error.message)

    def test_missingFile(self):
        """
        Envoy: C{-c /nonexistent.yaml} -> C{Invalid path: /nonexistent.yaml}.
        """
        error = self.assertRaises(ConfigError, loadBootstrap, "/nonexistent.yaml")
        self.assertEqual(error.message, "Invalid path: /nonexistent.yaml")

    def test_directory(self):
        """
        A directory is not a config file.
        """
        self.assertConfigError("Invalid path: ", configPath=self.tempDir())


class SyntaxTests(LoaderTestMixin, SynchronousTestCase):
    """YAML and JSON syntax, and the shape of the top level."""

    def test_yamlSyntaxError(self):
        """
        A YAML syntax error names line and column as yaml-cpp does
        (C{error at line 4, column 4: illegal block entry}).
        """
        path = self.writeFile("# c\nstatic_resources:\n  listeners: [\n   - name: x\n")
        self.assertConfigError(
            "yaml: error at line 4, column 4", "illegal block entry", configPath=path)

    def test_yamlErrorInConfigYaml(self):
        """
        --config-yaml is parsed with the same error reporting.
        """
        self.assertConfigError("yaml: error at line ", configYaml="a: [")

    def test_unknownTag(self):
        """
        An unknown YAML tag is a syntax error, not a traceback.
        """
        self.assertConfigError("yaml: error at line 1", configYaml="node: {id: !foo x}")

    def test_emptyFile(self):
        """
        Envoy: an empty or comment-only YAML file ->
        C{Unable to convert YAML as JSON}.
        """
        path = self.writeFile("# only a comment\n")
        self.assertConfigError("Unable to convert YAML as JSON", configPath=path)

    def test_topLevelList(self):
        """
        Envoy: a list at the top -> C{unexpected character: '['; expected
        '{'}; the message also says what is wrong in plain words.
        """
        message = self.assertConfigError(
            "unexpected character: '['; expected '{'", "must be a mapping",
            configYaml="- 1\n- 2\n")
        self.assertIn("a list", message)

    def test_topLevelScalar(self):
        """
        A bare string at the top is refused the same way.
        """
        self.assertConfigError("must be a mapping", configYaml="hello")

    def test_jsonFile(self):
        """
        A C{.json} file is read as JSON.
        """
        path = self.writeFile(json.dumps({"node": {"id": "n", "cluster": "c"}}), ".json")
        bootstrap = loadBootstrap(path)
        self.assertEqual(bootstrap.node.id, "n")

    def test_jsonSyntaxError(self):
        """
        A JSON syntax error names line and column.
        """
        path = self.writeFile('{"node": {"id": }}', ".json")
        self.assertConfigError("Unable to parse JSON as proto", "near 1:", configPath=path)

    def test_otherExtensionIsJson(self):
        """
        Envoy reads a file not ending in .yaml/.yml as JSON, so YAML in
        C{envoy.conf} fails; the message says why.
        """
        path = self.writeFile("node: {id: n}\n", ".conf")
        self.assertConfigError("Unable to parse JSON as proto", "read as JSON", configPath=path)

    def test_ymlExtension(self):
        """
        C{.yml} is YAML too.
        """
        bootstrap = loadBootstrap(self.writeFile(MINIMAL, ".yml"))
        self.assertEqual(bootstrap.static_resources.clusters[0].name, "c1")

    def test_notUtf8(self):
        """
        A binary file is refused with a clear message.
        """
        path = self.writeFile(b"\xff\xfe\x00node", ".yaml", mode="wb")
        self.assertConfigError("UTF-8", configPath=path)

    def test_textProto(self):
        """
        Envoy reads C{.pb_text} as text proto; Any values in expanded form
        have their type imported.
        """
        path = self.writeFile(
            'node { id: "n" cluster: "c" }\n'
            "static_resources { listeners { name: \"l\" address { socket_address {"
            ' address: "127.0.0.1" port_value: 10001 } }\n'
            "  filter_chains { filters { name: \"t\" typed_config {\n"
            "    [type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy]"
            ' { stat_prefix: "s" cluster: "c1" } } } } }\n'
            '  clusters { name: "c1" } }\n',
            ".pb_text")
        bootstrap = loadBootstrap(path)
        self.assertEqual(bootstrap.static_resources.listeners[0].name, "l")

    def test_textProtoError(self):
        """
        A text proto syntax error is a ConfigError.
        """
        path = self.writeFile("node { id: }\n", ".pb_text")
        self.assertConfigError("as a text envoy.config.bootstrap.v3.Bootstrap", configPath=path)

    def test_binaryProto(self):
        """
        Envoy reads C{.pb} as a serialized Bootstrap.
        """
        from envoy.config.bootstrap.v3 import bootstrap_pb2

        bootstrap = bootstrap_pb2.Bootstrap()
        bootstrap.node.id = "bin"
        path = self.writeFile(bootstrap.SerializeToString(), ".pb", mode="wb")
        self.assertEqual(loadBootstrap(path).node.id, "bin")
        broken = self.writeFile(b"\xff\xff\xff", ".pb", mode="wb")
        self.assertConfigError("binary", configPath=broken)


class YamlScalarTests(LoaderTestMixin, SynchronousTestCase):
    """Plain YAML scalars resolve as in Envoy's yaml-cpp conversion."""

    def test_yaml11BooleanN(self):
        """
        Envoy (yaml-cpp, YAML 1.1): unquoted C{n} is boolean false, so
        C{node: {id: n}} fails with C{@ node.id: string ... unexpected
        character: 'f'}.
        """
        self.assertConfigError(
            "@ node.id: string", "unexpected character: 'f'", "expected '\"'",
            configYaml="node: {id: n, cluster: c}")

    def test_yaml11BooleanForms(self):
        """
        y, yes, on, true (any case Envoy accepts) are true; n, no, off,
        false are false.
        """
        for text, expected in [("y", True), ("Yes", True), ("ON", True), ("true", True),
                               ("n", False), ("No", False), ("off", False), ("FALSE", False)]:
            self.assertIs(parseYaml("a: %s" % text)["a"], expected, text)

    def test_quotedStaysString(self):
        """
        A quoted scalar is always a string.
        """
        bootstrap = loadBootstrap(configYaml="node: {id: 'n', cluster: \"on\"}")
        self.assertEqual((bootstrap.node.id, bootstrap.node.cluster), ("n", "on"))

    def test_numbers(self):
        """
        Decimal, hex, octal and exponent forms are numbers; C{1_000} is not
        (Envoy: C{invalid number: '1_000'}).
        """
        self.assertEqual(parseYaml("a: 0x10")["a"], 16)
        self.assertEqual(parseYaml("a: 017")["a"], 15)
        self.assertEqual(parseYaml("a: 1e3")["a"], 1000.0)
        self.assertEqual(parseYaml("a: 1_000")["a"], "1_000")
        self.assertEqual(parseYaml("a: 1:20")["a"], "1:20")

    def test_datesStayStrings(self):
        """
        yaml-cpp has no timestamp type: a date is the string written.
        """
        self.assertEqual(parseYaml("a: 2001-01-01")["a"], "2001-01-01")

    def test_keysStayRaw(self):
        """
        Envoy keeps mapping keys as their raw text: C{on}, C{y}, C{1} are
        string keys, not booleans or numbers.
        """
        self.assertEqual(sorted(parseYaml("{on: 1, y: 2, 1: 3}")), ["1", "on", "y"])

    def test_mergeKeysRefused(self):
        """
        Envoy (yaml-cpp) does not expand C{<<}: it is an unknown field
        (C{no such field: '<<'}).
        """
        self.assertConfigError(
            "no such field: '<<'",
            configYaml="static_resources:\n  clusters:\n  - &a {name: a}\n  - {<<: *a}\n")

    def test_nonScalarKey(self):
        """
        A list as a mapping key is a YAML error, not a traceback.
        """
        self.assertConfigError("yaml: error", configYaml="? [a]\n: 1\n")


class FieldTests(LoaderTestMixin, SynchronousTestCase):
    """The descriptor-guided walk: Envoy's phrases and leniencies."""

    def test_unknownField(self):
        """
        Envoy: C{Protobuf message (type ... reason INVALID_ARGUMENT: invalid
        JSON in envoy.config.bootstrap.v3.Bootstrap @
        static_resources.listeners[0]: message
        envoy.config.listener.v3.Listener, ...: no such field:
        'bogus_field') has unknown fields}.
        """
        message = self.assertConfigError(
            "Protobuf message (type envoy.config.bootstrap.v3.Bootstrap reason "
            "INVALID_ARGUMENT: invalid JSON in envoy.config.bootstrap.v3.Bootstrap "
            "@ static_resources.listeners[0]: message envoy.config.listener.v3.Listener",
            "no such field: 'bogus_field'", ") has unknown fields",
            configYaml="static_resources: {listeners: [{name: l1, bogus_field: 1}]}")
        self.assertTrue(message.startswith("Protobuf message"))

    def test_unknownFieldInsideTypedConfig(self):
        """
        Unknown fields inside a typed_config are found too, with the path.
        """
        self.assertConfigError(
            "@ static_resources.clusters[0].typed_extension_protocol_options"
            "[envoy.extensions.upstreams.http.v3.HttpProtocolOptions]",
            "message envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "no such field: 'bogus'",
            configYaml="static_resources: {clusters: [{name: a, typed_extension_protocol_options: "
                       "{envoy.extensions.upstreams.http.v3.HttpProtocolOptions: "
                       "{'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3"
                       ".HttpProtocolOptions, bogus: 1}}}]}")

    def test_jsonNames(self):
        """
        Envoy accepts the camelCase JSON names as well.
        """
        bootstrap = loadBootstrap(
            configYaml="staticResources: {clusters: [{name: a, connectTimeout: 2s}]}")
        self.assertEqual(bootstrap.static_resources.clusters[0].connect_timeout.seconds, 2)

    def test_badEnum(self):
        """
        Envoy says C{... unknown enum value: 'STATICX') has unknown fields},
        which reads like a misspelt field name; txenvoy names the value, the
        field and what it may be.
        """
        message = self.assertConfigError(
            "unknown enum value 'STATICX' for field type @ static_resources.clusters[0].type",
            "envoy.config.cluster.v3.Cluster.DiscoveryType: one of STATIC, STRICT_DNS, "
            "LOGICAL_DNS, EDS, ORIGINAL_DST, in any case",
            configYaml="static_resources: {clusters: [{name: a, type: STATICX}]}")
        self.assertNotIn("unknown fields", message)

    def test_enumAnyCase(self):
        """
        Envoy parses enum names case-insensitively (C{codec_type: auto},
        C{lb_policy: round_robin}, C{type: Strict_Dns} all validate on Envoy
        1.40), and a number written as a string.
        """
        bootstrap = loadBootstrap(configYaml=(
            "static_resources: {clusters: [{name: a, type: Strict_Dns, lb_policy: round_robin},"
            " {name: b, type: '1'}, {name: c, type: ' 0'}]}"))
        clusters = bootstrap.static_resources.clusters
        self.assertEqual([c.type for c in clusters], [1, 1, 0])
        self.assertEqual(clusters[0].lb_policy, 0)

    def test_enumNotLenientBeyondEnvoy(self):
        """
        Envoy 1.40 rejects C{strict-dns} and C{0x2} (unknown enum value) and
        C{2.0}: only the case of a name and a decimal number are forgiven.
        """
        for value in ("strict-dns", "'0x2'", "2.0"):
            self.assertConfigError(
                "unknown enum value '%s' for field type" % (value.strip("'"),),
                configYaml="static_resources: {clusters: [{name: a, type: %s}]}" % (value,))

    def test_enumNumbers(self):
        """
        Envoy takes an enum by number; an undefined number fails the
        C{defined_only} rule (C{value must be one of the defined enum values}).
        """
        bootstrap = loadBootstrap(
            configYaml="static_resources: {clusters: [{name: a, type: 1}]}")
        self.assertEqual(bootstrap.static_resources.clusters[0].type, 1)
        self.assertConfigError(
            "ClusterValidationError.Type: value must be one of the defined enum values",
            configYaml="static_resources: {clusters: [{name: a, type: 77}]}")
        self.assertConfigError(
            "unknown enum value '1.5'",
            configYaml="static_resources: {clusters: [{name: a, type: 1.5}]}")

    def test_badDuration(self):
        """
        Envoy: C{Unable to parse JSON as proto (INVALID_ARGUMENT: invalid
        JSON in ... @ static_resources.clusters[0].connect_timeout: message
        google.protobuf.Duration, ...: duration must end with a single 's')}.
        """
        self.assertConfigError(
            "Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in "
            "envoy.config.bootstrap.v3.Bootstrap @ static_resources.clusters[0].connect_timeout: "
            "message google.protobuf.Duration",
            "duration must end with a single 's'",
            configYaml="static_resources: {clusters: [{name: a, connect_timeout: 1x}]}")
        self.assertConfigError(
            "duration must end with a single 's'",
            configYaml="static_resources: {clusters: [{name: a, connect_timeout: 1.5ss}]}")
        self.assertConfigError(
            "duration must start with an integer",
            configYaml="static_resources: {clusters: [{name: a, connect_timeout: abcs}]}")

    def test_durationNumberRefused(self):
        """
        Envoy: a bare number for a duration -> C{unexpected character: '5';
        expected '"'}.
        """
        self.assertConfigError(
            "connect_timeout: message google.protobuf.Duration",
            "unexpected character: '5'",
            configYaml="static_resources: {clusters: [{name: a, connect_timeout: 5}]}")

    def test_durationForms(self):
        """
        Fractional seconds, and Envoy's object form C{{seconds: 2}}.
        """
        bootstrap = loadBootstrap(configYaml=(
            "static_resources: {clusters: [{name: a, connect_timeout: 1.5s},"
            " {name: b, connect_timeout: {seconds: 2, nanos: 5}}]}"))
        first, second = bootstrap.static_resources.clusters
        self.assertEqual((first.connect_timeout.seconds, first.connect_timeout.nanos),
                         (1, 500000000))
        self.assertEqual((second.connect_timeout.seconds, second.connect_timeout.nanos), (2, 5))

    def test_negativeDuration(self):
        """
        Envoy: C{-1s} -> C{Invalid duration: Expected positive duration}.
        """
        self.assertConfigError(
            "Invalid duration: Expected positive duration",
            "static_resources.clusters[0].connect_timeout",
            configYaml="static_resources: {clusters: [{name: a, connect_timeout: '-1s'}]}")

    def test_hugeDuration(self):
        """
        A duration beyond protobuf's range is refused.
        """
        self.assertConfigError(
            "duration out of range",
            configYaml="static_resources: {clusters: [{name: a, connect_timeout: 999999999999999s}]}")

    def test_wrongScalarType(self):
        """
        Envoy: a number where a string is expected -> C{@ ...name: string,
        ...: unexpected character: '1'; expected '"'}.
        """
        self.assertConfigError(
            "@ static_resources.clusters[0].name: string", "unexpected character: '1'",
            configYaml="static_resources: {clusters: [{name: 123}]}")

    def test_messageGivenScalar(self):
        """
        Envoy: a scalar where a message is expected -> C{message ...Cluster
        ...: unexpected character: '5'; expected '{'}.
        """
        self.assertConfigError(
            "@ static_resources.clusters[0]: message envoy.config.cluster.v3.Cluster",
            "unexpected character: '5'; expected '{'",
            configYaml="static_resources: {clusters: [5]}")

    def test_integers(self):
        """
        Envoy: quoted integers parse; C{1.0} is an integer; C{1.5} has a
        fractional part; C{-1} is out of range for uint32.
        """
        bootstrap = loadBootstrap(configYaml=(
            "static_resources: {clusters: [{name: a, per_connection_buffer_limit_bytes: '5'},"
            " {name: b, per_connection_buffer_limit_bytes: 6.0}]}"))
        limits = [c.per_connection_buffer_limit_bytes.value
                  for c in bootstrap.static_resources.clusters]
        self.assertEqual(limits, [5, 6])
        template = "static_resources: {clusters: [{name: a, per_connection_buffer_limit_bytes: %s}]}"
        self.assertConfigError(
            "message google.protobuf.UInt32Value",
            "expected integer, but JSON number had fractional part",
            configYaml=template % "1.5")
        self.assertConfigError("JSON number out of range for int", configYaml=template % "-1")
        self.assertConfigError("invalid number: 'abc'", configYaml=template % "abc")
        self.assertConfigError("invalid number: 'true'", configYaml=template % "true")

    def test_wrapperObjectForm(self):
        """
        Envoy accepts a wrapper as C{{value: 5}} too.
        """
        bootstrap = loadBootstrap(configYaml=(
            "static_resources: {clusters: [{name: a, per_connection_buffer_limit_bytes: "
            "{value: 5}}]}"))
        self.assertEqual(
            bootstrap.static_resources.clusters[0].per_connection_buffer_limit_bytes.value, 5)
        bootstrap = loadBootstrap(configYaml=(
            "static_resources: {clusters: [{name: a, per_connection_buffer_limit_bytes: {}}]}"))
        limit = bootstrap.static_resources.clusters[0].per_connection_buffer_limit_bytes
        self.assertEqual(limit.value, 0)

    def test_booleans(self):
        """
        Envoy: C{"true"} in quotes is a boolean; C{1} is not
        (C{bool, ...: expected 'true' or 'false'}).
        """
        bootstrap = loadBootstrap(
            configYaml="static_resources: {clusters: [{name: a, respect_dns_ttl: 'true'}]}")
        self.assertTrue(bootstrap.static_resources.clusters[0].respect_dns_ttl)
        self.assertConfigError(
            "respect_dns_ttl: bool", "expected 'true' or 'false'",
            configYaml="static_resources: {clusters: [{name: a, respect_dns_ttl: 1}]}")

    def test_floats(self):
        """
        Doubles take numbers and numeric strings.
        """
        bootstrap = loadBootstrap(configYaml=(
            "static_resources: {clusters: [{name: a, common_lb_config: "
            "{healthy_panic_threshold: {value: '25.5'}}}]}"))
        self.assertEqual(
            bootstrap.static_resources.clusters[0].common_lb_config
            .healthy_panic_threshold.value, 25.5)
        self.assertConfigError(
            "invalid number: 'lots'",
            configYaml=("static_resources: {clusters: [{name: a, common_lb_config: "
                        "{healthy_panic_threshold: {value: lots}}}]}"))

    def test_bytes(self):
        """
        Bytes are base64; anything else is refused, not silently emptied.
        """
        template = ("static_resources: {secrets: [{name: s, tls_certificate: "
                    "{certificate_chain: {inline_bytes: '%s'}}}]}")
        bootstrap = loadBootstrap(configYaml=template % "aGVsbG8=")
        self.assertEqual(
            bootstrap.static_resources.secrets[0].tls_certificate.certificate_chain.inline_bytes,
            b"hello")
        self.assertConfigError("invalid base64", "inline_bytes", configYaml=template % "!!!")

    def test_mappingAsList(self):
        """
        Envoy takes a mapping where a list is expected as a one-element list
        (envoyproxy/examples dynamic-config-fs writes C{filters:} that way).
        """
        bootstrap = loadBootstrap(
            configYaml="static_resources:\n  clusters:\n    name: c1\n    connect_timeout: 1s\n")
        self.assertEqual([c.name for c in bootstrap.static_resources.clusters], ["c1"])

    def test_mappingAsListInsideTypedConfig(self):
        """
        The same inside a typed_config: C{http_filters: {name: ...}}.
        """
        from envoy.extensions.filters.network.http_connection_manager.v3 import (
            http_connection_manager_pb2 as hcm_pb2)

        bootstrap = loadBootstrap(configYaml=(
            "static_resources:\n"
            "  clusters: [{name: c1}]\n"
            "  listeners:\n"
            "  - address: {socket_address: {address: 127.0.0.1, port_value: 10001}}\n"
            "    filter_chains:\n"
            "      filters:\n"
            "        name: hcm\n"
            "        typed_config:\n"
            "          '@type': type.googleapis.com/envoy.extensions.filters.network"
            ".http_connection_manager.v3.HttpConnectionManager\n"
            "          stat_prefix: s\n"
            "          route_config: {virtual_hosts: {name: v, domains: '*'}}\n"
            "          http_filters: %s\n" % (ROUTER,)))
        chain = bootstrap.static_resources.listeners[0].filter_chains[0]
        hcm = hcm_pb2.HttpConnectionManager()
        chain.filters[0].typed_config.Unpack(hcm)
        self.assertEqual(len(hcm.http_filters), 1)
        self.assertEqual(list(hcm.route_config.virtual_hosts[0].domains), ["*"])

    def test_nestedListsSpliced(self):
        """
        Envoy splices a list nested in a repeated field into it:
        C{clusters: [[a, [b]], c, []]} is three clusters.
        """
        bootstrap = loadBootstrap(
            configYaml="static_resources: {clusters: [[{name: a}, [{name: b}]], {name: c}, []]}")
        self.assertEqual([c.name for c in bootstrap.static_resources.clusters], ["a", "b", "c"])

    def test_nullElement(self):
        """
        Envoy reads a null list element as an empty message, which then
        fails its rules (C{ClusterValidationError.Name}).
        """
        self.assertConfigError(
            "ClusterValidationError.Name: value length must be at least 1 characters",
            configYaml="static_resources: {clusters: [null]}")

    def test_nullScalarElement(self):
        """
        Envoy reads a null element of a list of scalars as the default
        value (C{domains: [null, null]} gives two empty domains).
        """
        bootstrap = loadBootstrap(
            configYaml="node: {id: i, cluster: c, client_features: [null, a]}")
        self.assertEqual(list(bootstrap.node.client_features), ["", "a"])

    def test_nullField(self):
        """
        A null field is unset, as in proto JSON.
        """
        bootstrap = loadBootstrap(
            configYaml="static_resources: {clusters: [{name: a, type: null, connect_timeout: ~}]}")
        self.assertFalse(bootstrap.static_resources.clusters[0].HasField("connect_timeout"))

    def test_unknownType(self):
        """
        Envoy: C{Unable to parse JSON as proto (INVALID_ARGUMENT: could not
        find @type 'type.googleapis.com/...')}; the path is added.
        """
        self.assertConfigError(
            "Unable to parse JSON as proto (INVALID_ARGUMENT: could not find @type "
            "'type.googleapis.com/envoy.extensions.filters.network.nosuch.v3.Nope')",
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config",
            configYaml=(
                "static_resources: {listeners: [{name: l, filter_chains: [{filters: [{name: x, "
                "typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.network"
                ".nosuch.v3.Nope}}]}]}]}"))

    def test_anyWithoutType(self):
        """
        A typed_config without C{@type}, or with a malformed one, is refused.
        """
        template = ("static_resources: {clusters: [{name: a, typed_extension_protocol_options: "
                    "{x: %s}}]}")
        self.assertConfigError("missing @type", configYaml=template % "{a: 1}")
        self.assertConfigError("invalid @type 'nope'", configYaml=template % "{'@type': nope}")

    def test_wellKnownTypeInAny(self):
        """
        A well-known type inside an Any carries its JSON in C{value}.
        """
        from google.protobuf import struct_pb2

        bootstrap = loadBootstrap(configYaml=(
            "static_resources: {clusters: [{name: a, typed_extension_protocol_options: "
            "{x: {'@type': type.googleapis.com/google.protobuf.Struct, value: {a: 1}}}}]}"))
        struct = struct_pb2.Struct()
        bootstrap.static_resources.clusters[0].typed_extension_protocol_options["x"].Unpack(struct)
        self.assertEqual(struct["a"], 1)

    def test_structValues(self):
        """
        Struct values keep YAML's types, and non-finite numbers are refused
        (JSON has none).
        """
        bootstrap = loadBootstrap(configYaml=(
            "static_resources: {clusters: [{name: a, metadata: {filter_metadata: "
            "{m: {b: [1, {c: null}], d: 2001-01-01}}}}]}"))
        metadata = bootstrap.static_resources.clusters[0].metadata.filter_metadata["m"]
        self.assertEqual(metadata["d"], "2001-01-01")
        self.assertConfigError(
            "invalid number: 'nan'",
            configYaml=("static_resources: {clusters: [{name: a, metadata: {filter_metadata: "
                        "{m: {x: .nan}}}}]}"))
        self.assertConfigError(
            "filter_metadata[m]", "message google.protobuf.Struct",
            configYaml=("static_resources: {clusters: [{name: a, metadata: {filter_metadata: "
                        "{m: 5}}}]}"))

    def test_deepNesting(self):
        """
        Absurd nesting is a ConfigError, not a RecursionError.
        """
        deep = "[" * 3000 + "]" * 3000
        error = self.assertRaises(ConfigError, loadBootstrap,
                                  configYaml="node: {metadata: {a: %s}}" % deep)
        self.assertTrue(error.message)


class MergeTests(LoaderTestMixin, SynchronousTestCase):
    """--config-yaml over -c, as Envoy merges them."""

    def test_repeatedAppended(self):
        """
        Envoy: C{-c} with one cluster plus C{--config-yaml} with one cluster
        loads two.
        """
        path = self.writeFile(MINIMAL)
        bootstrap = loadBootstrap(
            path, "static_resources: {clusters: [{name: c2, connect_timeout: 2s}]}")
        self.assertEqual([c.name for c in bootstrap.static_resources.clusters], ["c1", "c2"])

    def test_scalarsReplacedMessagesMerged(self):
        """
        Scalars in --config-yaml replace the file's; messages merge.
        """
        path = self.writeFile("node: {id: a, cluster: c}\nstats_flush_interval: 5s\n")
        bootstrap = loadBootstrap(path, "node: {id: b}\nstats_flush_interval: 7s\n")
        self.assertEqual((bootstrap.node.id, bootstrap.node.cluster), ("b", "c"))
        self.assertEqual(bootstrap.stats_flush_interval.seconds, 7)

    def test_yamlAlone(self):
        """
        Envoy: --config-yaml works without -c.
        """
        bootstrap = loadBootstrap(configYaml=MINIMAL)
        self.assertEqual(bootstrap.static_resources.clusters[0].name, "c1")

    def test_validatedAfterMerge(self):
        """
        Cross checks see the merged config: a duplicate across the two is
        found.
        """
        path = self.writeFile(MINIMAL)
        self.assertConfigError(
            "cluster manager: duplicate cluster 'c1'",
            configPath=path, configYaml="static_resources: {clusters: [{name: c1}]}")

    def test_emptyYamlOverride(self):
        """
        A --config-yaml holding only a comment is an error.
        """
        path = self.writeFile(MINIMAL)
        self.assertConfigError("Unable to convert YAML as JSON", configPath=path,
                               configYaml="# nothing")


class ServiceNodeTests(LoaderTestMixin, SynchronousTestCase):
    """--service-node and --service-cluster."""

    DYNAMIC = "dynamic_resources: {lds_config: {path_config_source: {path: lds.yaml}}}\n"

    def test_fillsEmptyNode(self):
        """
        Envoy: --service-node/--service-cluster satisfy the node requirement
        of dynamic resources.
        """
        bootstrap = loadBootstrap(configYaml=self.DYNAMIC, serviceNode="n", serviceCluster="c")
        self.assertEqual((bootstrap.node.id, bootstrap.node.cluster), ("n", "c"))

    def test_keepsConfiguredNode(self):
        """
        A node id or cluster set in the config is kept.
        """
        bootstrap = loadBootstrap(configYaml="node: {id: a, cluster: b}",
                                  serviceNode="n", serviceCluster="c")
        self.assertEqual((bootstrap.node.id, bootstrap.node.cluster), ("a", "b"))

    def test_halfNodeNotEnough(self):
        """
        Only the id is not enough for dynamic resources.
        """
        self.assertConfigError("node 'id' and 'cluster' are required",
                               configYaml=self.DYNAMIC, serviceNode="n")


class HelperTests(LoaderTestMixin, SynchronousTestCase):
    """readConfigFile and parseDict, used for LDS/CDS files."""

    def test_readConfigFile(self):
        """
        YAML and JSON files read as plain data.
        """
        self.assertEqual(readConfigFile(self.writeFile("a: 1\n")), {"a": 1})
        self.assertEqual(readConfigFile(self.writeFile('{"a": 1}', ".json")), {"a": 1})
        self.assertRaises(ConfigError, readConfigFile, "/nonexistent.yaml")

    def test_parseDictDiscoveryResponse(self):
        """
        parseDict fills any message type, with its own type in messages.
        """
        cls = protos.messageClass("envoy.service.discovery.v3.DiscoveryResponse")
        response = parseDict({"resources": {
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "x"}}, cls())
        self.assertEqual(len(response.resources), 1)
        error = self.assertRaises(ConfigError, parseDict, {"bogus": 1}, cls())
        self.assertIn("envoy.service.discovery.v3.DiscoveryResponse", error.message)


    def test_protobufErrorsTranslated(self):
        """
        What only protobuf itself checks (here a timestamp's text) still
        comes out as a ConfigError in Envoy's form, with the field path.
        """
        cls = protos.messageClass("envoy.admin.v3.ClustersConfigDump.StaticCluster")
        error = self.assertRaises(ConfigError, parseDict, {"last_updated": "garbage"}, cls())
        self.assertIn("Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in "
                      "envoy.admin.v3.ClustersConfigDump.StaticCluster @ last_updated: ",
                      error.message)
        message = parseDict({"last_updated": "2020-01-01T00:00:00Z"}, cls())
        self.assertEqual(message.last_updated.seconds, 1577836800)


class ProtosTests(SynchronousTestCase):
    """L{txenvoy.config.protos}: importing message types on demand."""

    def test_importTypeName(self):
        """
        A type of xds-protos is found and importable by its full name, a
        nested name or its type URL.
        """
        self.assertTrue(protos.importTypeName(
            "envoy.extensions.filters.network.echo.v3.Echo"))
        self.assertTrue(protos.importTypeName(
            "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"))
        self.assertTrue(protos.importTypeName(
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster"))

    def test_unknownType(self):
        """
        An unknown type, a type outside the known packages, or garbage gives
        False.
        """
        self.assertFalse(protos.importTypeName("envoy.extensions.nosuch.v3.Nope"))
        self.assertFalse(protos.importTypeName("os.path.Nope"))
        self.assertFalse(protos.importTypeName(""))
        self.assertFalse(protos.importTypeName(None))
        self.assertFalse(protos.importTypeName("envoy..x"))

    def test_messageClass(self):
        """
        messageClass returns the generated class; KeyError when unknown.
        """
        cls = protos.messageClass("envoy.extensions.filters.http.router.v3.Router")
        self.assertEqual(cls.DESCRIPTOR.full_name, "envoy.extensions.filters.http.router.v3.Router")
        self.assertIs(protos.messageClass("envoy.extensions.filters.http.router.v3.Router"), cls)
        self.assertRaises(KeyError, protos.messageClass, "envoy.nosuch.v3.X")

    def test_modulesForPackage(self):
        """
        A proto package maps to the pb2 modules in its directory.
        """
        modules = protos.modulesForPackage("envoy.extensions.filters.network.tcp_proxy.v3")
        self.assertIn("envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2", modules)
        self.assertEqual(protos.modulesForPackage("nosuchroot.v3"), ())

    def test_lazyImports(self):
        """
        Importing the loader imports neither YAML nor any proto module: the
        cost is paid when a config is loaded.
        """
        code = ("import sys; import txenvoy.config.loader, txenvoy.config.validation, "
                "txenvoy.config.checks; "
                "print(sorted(m for m in sys.modules if m == 'yaml' or m.startswith('envoy')))")
        output = subprocess.check_output([sys.executable, "-c", code], cwd=REPO_ROOT)
        self.assertEqual(output.strip(), b"[]")


# Field names that take generated data deep into a Bootstrap.
_NAMES = st.sampled_from([
    "static_resources", "listeners", "clusters", "name", "address", "socket_address",
    "port_value", "filter_chains", "filters", "typed_config", "@type", "connect_timeout",
    "node", "id", "cluster", "metadata", "filter_metadata", "type", "lb_policy",
    "load_assignment", "endpoints", "lb_endpoints", "admin", "dynamic_resources",
    "stats_flush_interval", "per_connection_buffer_limit_bytes", "bogus",
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
])
_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
            | st.text(max_size=20) | _NAMES)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(_NAMES | st.text(max_size=8), children, max_size=4),
    max_leaves=25)


class GarbageTests(SynchronousTestCase):
    """Whatever comes in, only ConfigError comes out."""

    def assertOnlyConfigError(self, **kwargs):
        try:
            loadBootstrap(**kwargs)
        except ConfigError as e:
            self.assertIsInstance(e.message, str)

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(_VALUES)
    def test_randomData(self, value):
        """
        Random nested data, written as JSON (valid YAML), never raises
        anything but ConfigError.
        """
        self.assertOnlyConfigError(configYaml=json.dumps(value) if value is not None else "x")

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.dictionaries(_NAMES, _VALUES, min_size=1, max_size=3))
    def test_randomBootstrapFields(self, value):
        """
        Random data under real field names reaches the deeper checks.
        """
        self.assertOnlyConfigError(configYaml=json.dumps(value))

    @settings(max_examples=150, deadline=None, database=None)
    @given(st.text(max_size=60))
    def test_randomText(self, text):
        """
        Random text as YAML never raises anything but ConfigError.
        """
        self.assertOnlyConfigError(configYaml=text or "x")

    def test_handPicked(self):
        """
        A few nasty inputs.
        """
        for text in ["{", "]", "\x00", "- - -", "*a", "&a [*a]", "!!python/object:os.system x",
                     "a: !!binary '@@'", "static_resources: 5", "static_resources: {clusters: {}}",
                     "node: {id: [1]}", "'@type': x", "layered_runtime: {layers: [{static_layer: 5}]}",
                     "static_resources: {clusters: [{name: a, connect_timeout: {seconds: x}}]}",
                     "static_resources: {clusters: [{name: a, connect_timeout: {nanos: 2000000000}}]}",
                     "stats_config: {stats_tags: [{tag_name: a, regex: '('}]}",
                     "static_resources: {clusters: [{name: a, metadata: {filter_metadata: [1]}}]}"]:
            self.assertOnlyConfigError(configYaml=text)
