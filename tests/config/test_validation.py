"""
Tests for L{txenvoy.config.validation}: protoc-gen-validate rules read from
the descriptors.

The generic rules are exercised on a small proto built here (so each rule
kind is covered whether or not Envoy's API uses it); Envoy's own messages pin
the phrases Envoy 1.40 prints.
"""

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    text_format,
    timestamp_pb2,
    wrappers_pb2,
)
from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.config.validation import validate

_PACKAGE = "txenvoy.tests.validation"

# Every rule kind, on one message; `valid()` below satisfies all of them.
_TEST_PROTO = r"""
name: "txenvoy/tests/validation_test.proto"
package: "txenvoy.tests.validation"
dependency: "validate/validate.proto"
dependency: "google/protobuf/any.proto"
dependency: "google/protobuf/duration.proto"
dependency: "google/protobuf/timestamp.proto"
dependency: "google/protobuf/wrappers.proto"
syntax: "proto3"
enum_type { name: "Color" value { name: "RED" number: 0 } value { name: "BLUE" number: 1 } }
message_type {
  name: "Inner"
  field { name: "label" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL
          options { [validate.rules] { string { min_len: 1 } } } }
}
message_type {
  name: "Off"
  options { [validate.disabled]: true }
  field { name: "label" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL
          options { [validate.rules] { string { min_len: 1 } } } }
}
message_type {
  name: "Sample"
  nested_type {
    name: "LabelsEntry"
    options { map_entry: true }
    field { name: "key" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
    field { name: "value" number: 2 type: TYPE_MESSAGE label: LABEL_OPTIONAL
            type_name: ".txenvoy.tests.validation.Inner" }
  }
  field { name: "name" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL
          options { [validate.rules] { string { min_len: 1 max_len: 5 } } } }
  field { name: "prefixed" number: 2 type: TYPE_STRING label: LABEL_OPTIONAL
          options { [validate.rules] { string { prefix: "x-" ignore_empty: true } } } }
  field { name: "host" number: 3 type: TYPE_STRING label: LABEL_OPTIONAL
          options { [validate.rules] { string { hostname: true ignore_empty: true } } } }
  field { name: "header" number: 4 type: TYPE_STRING label: LABEL_OPTIONAL
          options { [validate.rules] { string { well_known_regex: HTTP_HEADER_NAME
                                                ignore_empty: true } } } }
  field { name: "count" number: 5 type: TYPE_UINT32 label: LABEL_OPTIONAL
          options { [validate.rules] { uint32 { gte: 1 lte: 10 } } } }
  field { name: "ratio" number: 6 type: TYPE_DOUBLE label: LABEL_OPTIONAL
          options { [validate.rules] { double { gt: 0 lt: 1 } } } }
  field { name: "level" number: 7 type: TYPE_INT32 label: LABEL_OPTIONAL
          options { [validate.rules] { int32 { in: [0, 2, 3] } } } }
  field { name: "big" number: 8 type: TYPE_INT64 label: LABEL_OPTIONAL
          options { [validate.rules] { int64 { lt: 100 } } } }
  field { name: "color" number: 9 type: TYPE_ENUM label: LABEL_OPTIONAL
          type_name: ".txenvoy.tests.validation.Color"
          options { [validate.rules] { enum { defined_only: true } } } }
  field { name: "flag" number: 10 type: TYPE_BOOL label: LABEL_OPTIONAL
          options { [validate.rules] { bool { const: true } } } }
  field { name: "inner" number: 11 type: TYPE_MESSAGE label: LABEL_OPTIONAL
          type_name: ".txenvoy.tests.validation.Inner"
          options { [validate.rules] { message { required: true } } } }
  field { name: "items" number: 12 type: TYPE_MESSAGE label: LABEL_REPEATED
          type_name: ".txenvoy.tests.validation.Inner"
          options { [validate.rules] { repeated { min_items: 1 max_items: 3 } } } }
  field { name: "tags" number: 13 type: TYPE_STRING label: LABEL_REPEATED
          options { [validate.rules] { repeated { unique: true
                                                  items { string { min_len: 2 } } } } } }
  field { name: "timeout" number: 14 type: TYPE_MESSAGE label: LABEL_OPTIONAL
          type_name: ".google.protobuf.Duration"
          options { [validate.rules] { duration { required: true gt {} lte { seconds: 60 } } } } }
  field { name: "config" number: 15 type: TYPE_MESSAGE label: LABEL_OPTIONAL
          type_name: ".google.protobuf.Any"
          options { [validate.rules] { any { required: true } } } }
  field { name: "limit" number: 16 type: TYPE_MESSAGE label: LABEL_OPTIONAL
          type_name: ".google.protobuf.UInt32Value"
          options { [validate.rules] { uint32 { gte: 5 } } } }
  field { name: "labels" number: 17 type: TYPE_MESSAGE label: LABEL_REPEATED
          type_name: ".txenvoy.tests.validation.Sample.LabelsEntry"
          options { [validate.rules] { map { max_pairs: 2 keys { string { min_len: 1 } } } } } }
  field { name: "a" number: 18 type: TYPE_STRING label: LABEL_OPTIONAL oneof_index: 0
          options { [validate.rules] { string { min_len: 3 } } } }
  field { name: "b" number: 19 type: TYPE_UINT32 label: LABEL_OPTIONAL oneof_index: 0 }
  field { name: "opt" number: 20 type: TYPE_STRING label: LABEL_OPTIONAL oneof_index: 1
          proto3_optional: true
          options { [validate.rules] { string { min_len: 2 } } } }
  field { name: "off" number: 21 type: TYPE_MESSAGE label: LABEL_OPTIONAL
          type_name: ".txenvoy.tests.validation.Off" }
  field { name: "skipped" number: 22 type: TYPE_MESSAGE label: LABEL_OPTIONAL
          type_name: ".txenvoy.tests.validation.Inner"
          options { [validate.rules] { message { skip: true } } } }
  field { name: "typed" number: 23 type: TYPE_MESSAGE label: LABEL_OPTIONAL
          type_name: ".google.protobuf.Any"
          options { [validate.rules] { any { in: ["type.googleapis.com/google.protobuf.Duration"] } } } }
  field { name: "uri" number: 24 type: TYPE_STRING label: LABEL_OPTIONAL
          options { [validate.rules] { string { uri: true ignore_empty: true } } } }
  field { name: "ip" number: 25 type: TYPE_STRING label: LABEL_OPTIONAL
          options { [validate.rules] { string { ipv4: true ignore_empty: true } } } }
  field { name: "pattern" number: 26 type: TYPE_STRING label: LABEL_OPTIONAL
          options { [validate.rules] { string { pattern: "^[a-z]+$" ignore_empty: true } } } }
  field { name: "colors" number: 27 type: TYPE_ENUM label: LABEL_REPEATED
          type_name: ".txenvoy.tests.validation.Color"
          options { [validate.rules] { repeated { items { enum { defined_only: true } } } } } }
  field { name: "when" number: 28 type: TYPE_MESSAGE label: LABEL_OPTIONAL
          type_name: ".google.protobuf.Timestamp"
          options { [validate.rules] { timestamp { gt { seconds: 1000 } } } } }
  field { name: "bytes" number: 29 type: TYPE_BYTES label: LABEL_OPTIONAL
          options { [validate.rules] { bytes { max_len: 3 } } } }
  field { name: "notin" number: 30 type: TYPE_UINT64 label: LABEL_OPTIONAL
          options { [validate.rules] { uint64 { not_in: [7] } } } }
  field { name: "exact" number: 31 type: TYPE_FLOAT label: LABEL_OPTIONAL
          options { [validate.rules] { float { gte: 0 } } } }
  oneof_decl { name: "choice" options { [validate.required]: true } }
  oneof_decl { name: "_opt" }
}
"""


def _sampleClass():
    from validate import validate_pb2  # noqa: F401  (the options' extensions)

    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("txenvoy/tests/validation_test.proto")
    except KeyError:
        for module in (any_pb2, duration_pb2, timestamp_pb2, wrappers_pb2):
            assert module.DESCRIPTOR
        fileProto = text_format.Parse(_TEST_PROTO, descriptor_pb2.FileDescriptorProto())
        pool.AddSerializedFile(fileProto.SerializeToString())
    get = lambda name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName("%s.%s" % (_PACKAGE, name)))
    return get("Sample"), get("Inner")


Sample, Inner = _sampleClass()


def valid():
    """A Sample satisfying every rule."""
    sample = Sample(name="abc", count=1, ratio=0.5, flag=True, b=1)
    sample.inner.label = "x"
    sample.items.add(label="y")
    sample.timeout.seconds = 5
    sample.config.Pack(duration_pb2.Duration(seconds=1))
    return sample


class GenericRuleTests(SynchronousTestCase):
    """Each PGV rule kind, with PGV's wording and the field path."""

    def assertViolation(self, sample, phrase, path):
        error = self.assertRaises(ConfigError, validate, sample)
        self.assertIn("Proto constraint validation failed (SampleValidationError." + phrase,
                      error.message)
        self.assertTrue(error.message.endswith(") @ " + path), error.message)

    def test_valid(self):
        """
        The reference sample passes.
        """
        validate(valid())

    def test_stringLength(self):
        """
        min_len and max_len count characters.
        """
        sample = valid()
        sample.name = ""
        self.assertViolation(sample, "Name: value length must be at least 1 characters", "name")
        sample.name = "\u00e9\u00e9\u00e9\u00e9\u00e9"
        validate(sample)
        sample.name = "abcdef"
        self.assertViolation(sample, "Name: value length must be at most 5 characters", "name")

    def test_stringPrefixIgnoreEmpty(self):
        """
        ignore_empty skips the rules for an empty string.
        """
        sample = valid()
        validate(sample)
        sample.prefixed = "y-a"
        self.assertViolation(sample, 'Prefixed: value does not have prefix "x-"', "prefixed")

    def test_wellKnown(self):
        """
        hostname, HTTP header name, URI, IPv4 and pattern checks.
        """
        for field, bad, good, phrase in [
                ("host", "bad host", "a.example.com", "Host: value must be a valid hostname"),
                ("header", "bad header", "x-ok", "Header: value does not match regex pattern"),
                ("uri", "no scheme", "http://x/", "Uri: value must be a valid URI"),
                ("ip", "::1", "127.0.0.1", "Ip: value must be a valid IPv4 address"),
                ("pattern", "ABC", "abc", 'Pattern: value does not match regex pattern "^[a-z]+$"')]:
            sample = valid()
            setattr(sample, field, good)
            validate(sample)
            setattr(sample, field, bad)
            self.assertViolation(sample, phrase, field)

    def test_numberRanges(self):
        """
        Ranges are worded as PGV words them.
        """
        sample = valid()
        sample.count = 0
        self.assertViolation(sample, "Count: value must be inside range [1, 10]", "count")
        sample = valid()
        sample.ratio = 1.0
        self.assertViolation(sample, "Ratio: value must be inside range (0, 1)", "ratio")
        sample = valid()
        sample.big = 100
        self.assertViolation(sample, "Big: value must be less than 100", "big")
        sample = valid()
        sample.exact = -0.5
        self.assertViolation(sample, "Exact: value must be greater than or equal to 0", "exact")

    def test_numberLists(self):
        """
        in and not_in.
        """
        sample = valid()
        sample.level = 1
        self.assertViolation(sample, "Level: value must be in list [0, 2, 3]", "level")
        sample = valid()
        sample.notin = 7
        self.assertViolation(sample, "Notin: value must not be in list [7]", "notin")

    def test_enumDefinedOnly(self):
        """
        An undefined enum number fails defined_only, also as a list item.
        """
        sample = valid()
        sample.color = 7
        self.assertViolation(sample, "Color: value must be one of the defined enum values", "color")
        sample = valid()
        sample.colors.extend([1, 9])
        self.assertViolation(
            sample, "Colors[1]: value must be one of the defined enum values", "colors[1]")

    def test_boolConst(self):
        """
        bool const.
        """
        sample = valid()
        sample.flag = False
        self.assertViolation(sample, "Flag: value must equal true", "flag")

    def test_messageRequired(self):
        """
        message.required, and recursion into the set message.
        """
        sample = valid()
        sample.ClearField("inner")
        self.assertViolation(sample, "Inner: value is required", "inner")
        sample = valid()
        sample.inner.label = ""
        error = self.assertRaises(ConfigError, validate, sample)
        self.assertEqual(
            error.message,
            "Proto constraint validation failed (InnerValidationError.Label: value length "
            "must be at least 1 characters) @ inner.label")

    def test_repeated(self):
        """
        min_items, max_items, unique, item rules, and recursion into items.
        """
        sample = valid()
        del sample.items[:]
        self.assertViolation(sample, "Items: value must contain at least 1 item(s)", "items")
        sample.items.add(label="a")
        sample.items.add(label="b")
        sample.items.add(label="c")
        sample.items.add(label="d")
        self.assertViolation(sample, "Items: value must contain no more than 3 item(s)", "items")
        sample = valid()
        sample.items.add(label="")
        error = self.assertRaises(ConfigError, validate, sample)
        self.assertIn("InnerValidationError.Label", error.message)
        self.assertTrue(error.message.endswith("@ items[1].label"))
        sample = valid()
        sample.tags.extend(["ab", "ab"])
        self.assertViolation(sample, "Tags: repeated value must contain unique items", "tags")
        sample = valid()
        sample.tags.extend(["ab", "c"])
        self.assertViolation(sample, "Tags[1]: value length must be at least 2 characters",
                             "tags[1]")

    def test_duration(self):
        """
        duration required, gt and lte.
        """
        sample = valid()
        sample.ClearField("timeout")
        self.assertViolation(sample, "Timeout: value is required", "timeout")
        sample.timeout.seconds = 0
        self.assertViolation(sample, "Timeout: value must be inside range (0s, 60s]", "timeout")
        sample.timeout.seconds = 61
        self.assertViolation(sample, "Timeout: value must be inside range (0s, 60s]", "timeout")

    def test_negativeDuration(self):
        """
        Envoy refuses a negative duration before any rule.
        """
        sample = valid()
        sample.timeout.seconds = -1
        error = self.assertRaises(ConfigError, validate, sample)
        self.assertIn("Invalid duration: Expected positive duration", error.message)

    def test_any(self):
        """
        any.required and any.in; the Any's content is validated too.
        """
        sample = valid()
        sample.ClearField("config")
        self.assertViolation(sample, "Config: value is required", "config")
        sample = valid()
        sample.typed.Pack(wrappers_pb2.UInt32Value(value=1))
        self.assertViolation(
            sample, "Typed: type URL must be in list [type.googleapis.com/google.protobuf.Duration]",
            "typed")
        sample = valid()
        sample.config.Pack(Inner(label=""))
        error = self.assertRaises(ConfigError, validate, sample)
        self.assertIn("InnerValidationError.Label", error.message)
        self.assertTrue(error.message.endswith("@ config.label"))
        sample = valid()
        sample.config.Pack(duration_pb2.Duration(seconds=-5))
        self.assertIn("Expected positive duration",
                      self.assertRaises(ConfigError, validate, sample).message)

    def test_anyUnknownType(self):
        """
        An Any of a type no module defines cannot be checked: an error.
        """
        sample = valid()
        sample.config.type_url = "type.googleapis.com/envoy.nosuch.v3.Nope"
        error = self.assertRaises(ConfigError, validate, sample)
        self.assertIn("could not find @type 'type.googleapis.com/envoy.nosuch.v3.Nope'",
                      error.message)

    def test_wrapper(self):
        """
        Scalar rules on a wrapper apply to its value when it is set.
        """
        sample = valid()
        sample.limit.value = 5
        validate(sample)
        sample.limit.value = 4
        self.assertViolation(sample, "Limit: value must be greater than or equal to 5", "limit")

    def test_map(self):
        """
        max_pairs, key rules and recursion into the values.
        """
        sample = valid()
        sample.labels["a"].label = "x"
        validate(sample)
        sample.labels["b"].label = "x"
        sample.labels["c"].label = "x"
        self.assertViolation(sample, "Labels: value must contain no more than 2 pair(s)", "labels")
        sample = valid()
        sample.labels[""].label = "x"
        self.assertViolation(sample, "Labels[]: map key: value length must be at least 1",
                             "labels[]")
        sample = valid()
        sample.labels["k"].label = ""
        error = self.assertRaises(ConfigError, validate, sample)
        self.assertTrue(error.message.endswith("@ labels[k].label"))

    def test_oneof(self):
        """
        A required oneof must be set; rules of its members apply when set.
        """
        sample = valid()
        sample.ClearField("b")
        error = self.assertRaises(ConfigError, validate, sample)
        self.assertEqual(
            error.message,
            'Proto constraint validation failed (field: "choice", reason: is required) @ choice')
        sample.a = "ab"
        self.assertViolation(sample, "A: value length must be at least 3 characters", "a")
        sample.a = "abc"
        validate(sample)

    def test_proto3Optional(self):
        """
        An unset proto3 optional field is not checked; a set one is.
        """
        sample = valid()
        validate(sample)
        sample.opt = ""
        self.assertViolation(sample, "Opt: value length must be at least 2 characters", "opt")

    def test_disabledAndSkip(self):
        """
        validate.disabled on a message and message.skip on a field turn the
        checks off.
        """
        sample = valid()
        sample.off.label = ""
        sample.skipped.label = ""
        validate(sample)

    def test_timestamp(self):
        """
        timestamp gt.
        """
        sample = valid()
        sample.when.seconds = 5
        self.assertViolation(sample, "When: value must be greater than 1000s", "when")
        sample.when.seconds = 5000
        validate(sample)

    def test_bytes(self):
        """
        Bytes length counts bytes.
        """
        sample = valid()
        sample.bytes = b"abcd"
        self.assertViolation(sample, "Bytes: value length must be at most 3 bytes", "bytes")

    def test_pathPrefix(self):
        """
        The path argument prefixes every path.
        """
        sample = valid()
        sample.name = ""
        error = self.assertRaises(ConfigError, validate, sample, "x.y[0]")
        self.assertTrue(error.message.endswith("@ x.y[0].name"))


class EnvoyMessageTests(SynchronousTestCase):
    """Envoy's own messages and the phrases Envoy 1.40 prints for them."""

    def bootstrap(self, text):
        from envoy.config.bootstrap.v3 import bootstrap_pb2

        from txenvoy.config.loader import parseDict, parseYaml

        return parseDict(parseYaml(text), bootstrap_pb2.Bootstrap())

    def test_emptyClusterName(self):
        """
        Envoy: C{ClusterValidationError.Name: value length must be at least 1
        characters}.
        """
        bootstrap = self.bootstrap("static_resources: {clusters: [{name: ''}]}")
        error = self.assertRaises(ConfigError, validate, bootstrap)
        self.assertEqual(
            error.message,
            "Proto constraint validation failed (ClusterValidationError.Name: value length "
            "must be at least 1 characters) @ static_resources.clusters[0].name")

    def test_missingStatPrefix(self):
        """
        Envoy validates a typed_config when it builds it:
        C{HttpConnectionManagerValidationError.StatPrefix: value length must
        be at least 1 characters}.
        """
        bootstrap = self.bootstrap(
            "static_resources: {listeners: [{name: l, filter_chains: [{filters: [{name: h, "
            "typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.network"
            ".http_connection_manager.v3.HttpConnectionManager}}]}]}]}")
        error = self.assertRaises(ConfigError, validate, bootstrap).errors[0]
        self.assertIn(
            "HttpConnectionManagerValidationError.StatPrefix: value length must be at least 1 "
            "characters", error.message)
        self.assertTrue(error.message.endswith(
            "@ static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix"))

    def test_everyViolation(self):
        """
        Envoy stops at the first violation; txenvoy reports the first of
        every field, the one Envoy gives first.
        """
        bootstrap = self.bootstrap(
            "static_resources: {clusters: [{name: '', connect_timeout: 0s}, {name: b, "
            "per_connection_buffer_limit_bytes: 0, circuit_breakers: {thresholds: "
            "[{priority: 7}]}}]}")
        error = self.assertRaises(ConfigError, validate, bootstrap)
        self.assertEqual([e.message.rsplit(" @ ", 1)[1] for e in error.errors], [
            "static_resources.clusters[0].name",
            "static_resources.clusters[0].connect_timeout",
            "static_resources.clusters[1].circuit_breakers.thresholds[0].priority"])

    def test_healthCheckRequired(self):
        """
        Envoy: C{HealthCheckValidationError.Interval: value is required};
        for the required oneof Envoy says C{field: "health_checker", reason:
        is required}.
        """
        bootstrap = self.bootstrap(
            "static_resources: {clusters: [{name: a, health_checks: [{timeout: 1s}]}]}")
        error = self.assertRaises(ConfigError, validate, bootstrap)
        self.assertIn("HealthCheckValidationError.Interval: value is required", error.message)
        bootstrap = self.bootstrap(
            "static_resources: {clusters: [{name: a, health_checks: [{timeout: 1s, interval: 1s,"
            " unhealthy_threshold: 1, healthy_threshold: 1}]}]}")
        error = self.assertRaises(ConfigError, validate, bootstrap)
        self.assertIn('(field: "health_checker", reason: is required)', error.message)
        self.assertTrue(error.message.endswith(
            "@ static_resources.clusters[0].health_checks[0].health_checker"))

    def test_requiredWrapper(self):
        """
        Envoy: a required wrapper -> C{BufferValidationError.MaxRequestBytes:
        value is required and must not be nil.}; a required message ->
        C{RouteValidationError.Match: value is required}.
        """
        from txenvoy.config import protos

        buffer = protos.messageClass("envoy.extensions.filters.http.buffer.v3.Buffer")()
        error = self.assertRaises(ConfigError, validate, buffer)
        self.assertIn("BufferValidationError.MaxRequestBytes: value is required and must not "
                      "be nil.", error.message)
        route = protos.messageClass("envoy.config.route.v3.Route")()
        route.route.cluster = "c"
        error = self.assertRaises(ConfigError, validate, route)
        self.assertIn("RouteValidationError.Match: value is required)", error.message)

    def test_statsFlushInterval(self):
        """
        A duration range from Envoy's bootstrap.
        """
        bootstrap = self.bootstrap("stats_flush_interval: 0.0005s")
        error = self.assertRaises(ConfigError, validate, bootstrap)
        self.assertIn("BootstrapValidationError.StatsFlushInterval: value must be inside range",
                      error.message)

    def test_headerNameNotStrict(self):
        """
        Envoy's header keys use the non-strict header rule: any text
        without NUL, CR or LF; the checks of one field do not leak into
        another's.
        """
        bootstrap = self.bootstrap(
            "static_resources: {clusters: [{name: a, health_checks: [{timeout: 1s, interval: 1s,"
            " unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /,"
            " request_headers_to_add: [{header: {key: x-a, value: b}}]}}]}]}")
        validate(bootstrap)

    def test_bigConfig(self):
        """
        Rules are compiled once per type, so a big config is checked
        quickly.
        """
        import time

        clusters = ",".join(
            "{name: c%d, connect_timeout: 1s, load_assignment: {cluster_name: c%d, endpoints: "
            "[{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, "
            "port_value: 80}}}}]}]}}" % (i, i) for i in range(500))
        bootstrap = self.bootstrap("static_resources: {clusters: [%s]}" % clusters)
        start = time.perf_counter()
        validate(bootstrap)
        self.assertLess(time.perf_counter() - start, 2.0)
