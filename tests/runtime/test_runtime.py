"""
Tests for L{txenvoy.runtime}: layers, snapshots, the disk layer's reload on
a symlink swap, the admin layer, and C{/runtime} as Envoy 1.40 prints it
(expected values were taken from a real Envoy 1.40 on the same configs).
"""

import json
import os
import shutil
import tempfile

from google.protobuf import json_format
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.type.v3 import percent_pb2

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.loader import loadBootstrap
from txenvoy.runtime import (
    FractionalPercent,
    NoAdminLayer,
    Runtime,
    RuntimeFeatureFlag,
    RuntimeFractionalPercent,
    RuntimeYamlError,
)
from txenvoy.runtime._disk import fileValue
from txenvoy.server.server import Server
from txenvoy.stats.store import StatsStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "..", "shared", "envoy-examples")


def layered(*layers):
    """A C{LayeredRuntime} message from layer dicts."""
    return json_format.ParseDict({"layered_runtime": {"layers": list(layers)}},
                                 bootstrap_pb2.Bootstrap()).layered_runtime


class RuntimeTestCase(SynchronousTestCase):

    def setUp(self):
        self.store = StatsStore()
        self.shard = self.store.shard("main_thread")
        self.clock = Clock()

    def runtime(self, *layers, **kw):
        return Runtime(self.clock, layered(*layers), self.shard, **kw)

    def stat(self, name):
        snap = self.store.snapshot()
        return snap.counters.get("runtime." + name, snap.gauges.get("runtime." + name))

    def tempdir(self):
        path = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, path)
        return path

    def write(self, root, relative, text):
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


class StaticLayerTests(RuntimeTestCase):

    def test_flattenedAndPrinted(self):
        """
        Nested keys are dotted; numbers print as Envoy prints them (an int32
        with six significant digits); a struct naming a numerator is one
        fractional percent; an empty struct is one (empty) value.
        """
        rt = self.runtime({"name": "base", "static_layer": {
            "i": 1000, "big": 1234567, "huge": 2147483648, "f": 0.5, "neg": -2, "t": True,
            "s": "text", "nested": {"a": {"b": 7}}, "x.y": 4, "empty": {},
            "frac": {"numerator": 5, "denominator": "TEN_THOUSAND"}}})
        snap = rt.snapshot()
        self.assertEqual({k: snap.get(k) for k in snap.values if k != "frac"}, {
            "i": "1000", "big": "1.23457e+06", "huge": "2147483648", "f": "0.5", "neg": "-2",
            "t": "true", "s": "text", "nested.a.b": "7", "x.y": "4", "empty": ""})
        self.assertEqual(snap.getInteger("big", 0), 1234567)
        self.assertEqual(snap.values["frac"].fraction, FractionalPercent(5, 10000))
        self.assertEqual((self.stat("num_keys"), self.stat("num_layers"),
                          self.stat("load_success")), (11, 1, 1))

    def test_invalidValues(self):
        """Envoy's message for a list or a null."""
        e = self.assertRaises(ConfigError, self.runtime,
                              {"name": "s", "static_layer": {"a": {"b": None}}})
        self.assertEqual(str(e), "layered_runtime.layers[0].static_layer: Invalid runtime entry "
                                 "value for a.b")
        e = self.assertRaises(ConfigError, self.runtime, {"name": "s", "static_layer": {"a": [1]}})
        self.assertIn("Invalid runtime entry value for a", str(e))

    def test_layerErrors(self):
        """Envoy's messages for duplicate names and a second admin layer."""
        e = self.assertRaises(ConfigError, self.runtime, {"name": "s", "static_layer": {}},
                              {"name": "s", "admin_layer": {}})
        self.assertEqual(str(e), "layered_runtime.layers[1].name: Duplicate layer name: s")
        e = self.assertRaises(ConfigError, self.runtime, {"name": "a", "admin_layer": {}},
                              {"name": "b", "admin_layer": {}})
        self.assertIn("Too many admin layers specified in LayeredRuntime, at most one may be "
                      "specified", str(e))
        e = self.assertRaises(UnsupportedField, self.runtime, {"name": "r", "rtds_layer": {
            "name": "r", "rtds_config": {"path": "/x"}}})
        self.assertIn("layered_runtime.layers[0].rtds_layer", str(e))

    def test_noLayers(self):
        """Without layered_runtime Envoy 1.40 has no layers at all."""
        rt = Runtime(self.clock, None, self.shard)
        self.assertEqual(rt.dump(), {"entries": {}, "layers": []})
        self.assertIsNone(rt.adminLayer)
        self.assertEqual((self.stat("load_success"), self.stat("override_dir_not_exists"),
                          self.stat("num_layers")), (1, 1, 0))
        self.assertRaises(NoAdminLayer, rt.mergeValues, {"a": "1"})


class SnapshotTests(RuntimeTestCase):

    def setUp(self):
        RuntimeTestCase.setUp(self)
        self.rt = self.runtime({"name": "base", "static_layer": {
            "pct": 30, "quoted": "true", "neg": -4, "zero": 0}}, {"name": "admin", "admin_layer": {}})

    def test_typedReads(self):
        """
        Integers floor floats and ignore negatives; booleans come from
        true/false and integers; a quoted "true" in the static layer is a
        string (Envoy 1.40 rejects booleans written as strings).
        """
        self.rt.mergeValues({"float": " 3.7 ", "yes": "yes", "upper": "TRUE", "str": "abc"})
        snap = self.rt.snapshot()
        self.assertEqual((snap.getInteger("float", -1), snap.getDouble("float", -1.0)), (3, 3.7))
        self.assertEqual((snap.get("float"), snap.get("missing")), (" 3.7 ", None))
        self.assertEqual((snap.getInteger("neg", 9), snap.getDouble("neg", 0.0)), (9, -4.0))
        self.assertEqual([snap.getBoolean(k, None) for k in
                          ("yes", "upper", "pct", "zero", "quoted", "str")],
                         [True, True, True, False, None, None])
        self.assertEqual(snap.getInteger("str", 5), 5)

    def test_featureEnabled(self):
        """An integer percentage; no random draw when 0 or 100."""
        snap = self.rt.snapshot()
        self.assertTrue(snap.featureEnabled("pct", 0, randomValue=29))
        self.assertFalse(snap.featureEnabled("pct", 0, randomValue=130))
        self.assertTrue(snap.featureEnabled("missing", 100))
        self.assertFalse(snap.featureEnabled("missing", 0))
        self.assertFalse(snap.featureEnabled("zero", 100))

    def test_featureEnabledFractional(self):
        """
        A runtime fractional percent (YAML numerator/denominator), an integer
        percent (above 100 is always on), or the default.
        """
        self.rt.mergeValues({"frac": "numerator: 5\ndenominator: TEN_THOUSAND",
                             "many": "250", "flow": "{numerator: 7}"})
        snap = self.rt.snapshot()
        default = percent_pb2.FractionalPercent(numerator=1, denominator=2)  # 1 in a million
        self.assertTrue(snap.featureEnabledFractional("frac", default, randomValue=10004))
        self.assertFalse(snap.featureEnabledFractional("frac", default, randomValue=10005))
        self.assertTrue(snap.featureEnabledFractional("pct", default, randomValue=129))
        self.assertTrue(snap.featureEnabledFractional("many", default, randomValue=99))
        self.assertTrue(snap.featureEnabledFractional("flow", default, randomValue=6))
        self.assertFalse(snap.featureEnabledFractional("flow", default, randomValue=7))
        self.assertTrue(snap.featureEnabledFractional("missing", default, randomValue=1000000))
        self.assertFalse(snap.featureEnabledFractional("missing", default, randomValue=1))

    def test_compiledHelpers(self):
        """RuntimeFractionalPercent and RuntimeFeatureFlag as filters use them."""
        from envoy.config.core.v3 import base_pb2

        fraction = RuntimeFractionalPercent(json_format.ParseDict(
            {"default_value": {"numerator": 50}, "runtime_key": "pct"},
            base_pb2.RuntimeFractionalPercent()))
        snap = self.rt.snapshot()
        self.assertTrue(fraction.enabled(snap, randomValue=29))
        self.assertFalse(fraction.enabled(snap, randomValue=30))
        flag = RuntimeFeatureFlag(json_format.ParseDict(
            {"default_value": True, "runtime_key": "zero"}, base_pb2.RuntimeFeatureFlag()))
        self.assertFalse(flag.enabled(snap))

    def test_snapshotsAreImmutable(self):
        """A change makes a new snapshot; one already taken does not move."""
        before = self.rt.snapshot()
        self.rt.adminLayer.set("pct", "90")
        self.assertEqual((before.get("pct"), self.rt.snapshot().get("pct")), ("30", "90"))
        self.assertIsNot(before, self.rt.snapshot())


class AdminLayerTests(RuntimeTestCase):

    def setUp(self):
        RuntimeTestCase.setUp(self)
        self.rt = self.runtime({"name": "static", "static_layer": {"k": 1000}},
                               {"name": "admin", "admin_layer": {}})

    def test_setAndRemove(self):
        """
        Envoy's /runtime after C{/runtime_modify?k=5&fresh=abc}, then with
        empty values; admin_overrides_active follows, each change loads.
        """
        self.rt.mergeValues({"k": "5", "fresh": "abc"})
        self.assertEqual(self.rt.dump(), {"entries": {
            "fresh": {"final_value": "abc", "layer_values": ["", "abc"]},
            "k": {"final_value": "5", "layer_values": ["1000", "5"]}},
            "layers": ["static", "admin"]})
        self.assertEqual((self.stat("admin_overrides_active"), self.stat("load_success"),
                          self.stat("num_keys")), (1, 2, 2))
        self.rt.adminLayer.set("k", "")
        self.rt.mergeValues({"fresh": "", "never-set": ""})
        self.assertEqual(self.rt.dump()["entries"], {
            "k": {"final_value": "1000", "layer_values": ["1000", ""]}})
        self.assertEqual((self.stat("admin_overrides_active"), self.stat("load_success")), (0, 4))

    def test_rawTextKept(self):
        """What was sent is what /runtime shows, parsed as YAML for typed reads."""
        self.rt.mergeValues({"hex": "0x10", "spaced": "  7 ", "list": "[1,2]", "null": "~",
                             "big": "2147483648"})
        snap = self.rt.snapshot()
        self.assertEqual([snap.get(k) for k in ("hex", "spaced", "list", "null", "big")],
                         ["0x10", "  7 ", "[1,2]", "~", "2147483648"])
        self.assertEqual([snap.getInteger(k, None) for k in ("hex", "spaced", "list", "big")],
                         [16, 7, None, 2147483648])

    def test_badYaml(self):
        """A value that is not YAML changes nothing."""
        e = self.assertRaises(RuntimeYamlError, self.rt.mergeValues, {"a": "1", "b": "a: ["})
        self.assertTrue(str(e).startswith("yaml-cpp: error at line"))
        self.assertNotIn("a", self.rt.snapshot())
        self.assertEqual(self.stat("load_success"), 1)


class DiskLayerTests(RuntimeTestCase):

    def setUp(self):
        RuntimeTestCase.setUp(self)
        self.base = self.tempdir()
        self.write(self.base, "v1/envoy/fault/http/abort/abort_percent", "0")
        self.write(self.base, "v1/envoy/b", "# comment\nhello\n\nworld  \n")
        self.write(self.base, "v1/envoy/svc/a", "12\n")
        self.write(self.base, "v2/envoy/only", "99")
        self.root = os.path.join(self.base, "current")
        os.symlink(os.path.join(self.base, "v1"), self.root)

    def swap(self, target):
        tmp = self.root + ".tmp"
        os.symlink(os.path.join(self.base, target), tmp)
        os.rename(tmp, self.root)

    def test_fileValue(self):
        """Envoy's reading: comments and empty lines out, the last line trimmed."""
        self.assertEqual(fileValue("# comment\nhello\n\nworld  \n"), "hello\nworld")
        self.assertEqual(fileValue("5\n# trailing comment"), "5\n")
        self.assertEqual(fileValue(" 3.7 "), " 3.7")
        self.assertEqual(fileValue(""), "")

    def test_keysFromPaths(self):
        """Every file is a key; path separators become dots."""
        rt = self.runtime({"name": "disk", "disk_layer": {"symlink_root": self.root,
                                                          "subdirectory": "envoy"}})
        snap = rt.snapshot()
        self.assertEqual({k: snap.get(k) for k in snap.values}, {
            "fault.http.abort.abort_percent": "0", "b": "hello\nworld", "svc.a": "12"})
        self.assertEqual(snap.getInteger("svc.a", 0), 12)

    def test_appendServiceClusterAndMissingDirectories(self):
        """
        append_service_cluster reads C{<root>/<subdirectory>/<cluster>}; a
        layer whose directory is missing is left out of the snapshot (and of
        /runtime's layers). override_dir_exists counts only with more than
        one disk layer loaded (Envoy's quirk).
        """
        rt = self.runtime(
            {"name": "disk", "disk_layer": {"symlink_root": self.root, "subdirectory": "envoy"}},
            {"name": "svc", "disk_layer": {"symlink_root": self.root, "subdirectory": "envoy",
                                           "append_service_cluster": True}},
            {"name": "gone", "disk_layer": {"symlink_root": self.root, "subdirectory": "nope"}},
            serviceCluster="svc")
        self.assertEqual(rt.dump()["layers"], ["disk", "svc"])
        self.assertEqual(rt.dump()["entries"]["a"], {"final_value": "12",
                                                     "layer_values": ["", "12"]})
        self.assertEqual((self.stat("override_dir_exists"), self.stat("override_dir_not_exists"),
                          self.stat("num_layers")), (1, 0, 2))

    def test_watchErrors(self):
        """Envoy's messages: a bare name, a missing parent directory."""
        e = self.assertRaises(ConfigError, self.runtime, {"name": "d", "disk_layer": {
            "symlink_root": "14-runtime", "subdirectory": "envoy"}})
        self.assertEqual(str(e), "layered_runtime.layers[0].disk_layer.symlink_root: invalid "
                                 "file path 14-runtime")
        missing = os.path.join(self.base, "no", "such")
        e = self.assertRaises(ConfigError, self.runtime, {"name": "d", "disk_layer": {
            "symlink_root": missing}})
        self.assertIn("unable to add filesystem watch for file %s: No such file or directory"
                      % (missing,), str(e))
        # The root itself may be missing: its directory is watched.
        rt = self.runtime({"name": "d", "disk_layer": {
            "symlink_root": os.path.join(self.base, "later")}})
        self.assertEqual(rt.dump(), {"entries": {}, "layers": []})

    def test_reloadOnSymlinkSwap(self):
        """
        Swapping the symlink reloads within a poll interval, once per disk
        layer on that root (Envoy has one watch per layer); editing a file in
        place does not (Envoy watches for the root being moved to).
        """
        rt = self.runtime(
            {"name": "disk", "disk_layer": {"symlink_root": self.root, "subdirectory": "envoy"}},
            {"name": "disk2", "disk_layer": {"symlink_root": self.root, "subdirectory": "envoy"}})
        rt.start()
        self.assertEqual(self.stat("load_success"), 2)
        self.write(self.base, "v1/envoy/svc/a", "13")
        self.clock.advance(1)
        self.assertEqual(rt.snapshot().get("svc.a"), "12")
        self.swap("v2")
        self.clock.advance(1)
        self.assertEqual({k: rt.snapshot().get(k) for k in rt.snapshot().values}, {"only": "99"})
        self.assertEqual(self.stat("load_success"), 4)
        self.clock.advance(1)
        self.assertEqual(self.stat("load_success"), 4)
        rt.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_badLayerIsLeftOut(self):
        """A layer that cannot be read is left out and counted as a load error."""
        deep = os.path.join(self.base, "v1", "envoy", *("d" * 17))
        os.makedirs(deep)
        rt = self.runtime({"name": "disk", "disk_layer": {"symlink_root": self.root,
                                                          "subdirectory": "envoy"}})
        self.assertEqual(rt.dump(), {"entries": {}, "layers": []})
        self.assertEqual((self.stat("load_error"), self.stat("load_success")), (1, 0))

    def test_faultInjectionExample(self):
        """
        14-fault-injection.yaml's runtime, run from the examples folder:
        Envoy 1.40's /runtime, entry for entry.
        """
        cwd = os.getcwd()
        os.chdir(EXAMPLES)
        self.addCleanup(os.chdir, cwd)
        bootstrap = loadBootstrap("14-fault-injection.yaml")
        rt = Runtime(self.clock, bootstrap.layered_runtime, self.shard)
        self.assertEqual(rt.dump(), {"entries": {
            "fault.http.abort.abort_percent": {"final_value": "0", "layer_values": ["0"]},
            "fault.http.abort.http_status": {"final_value": "503", "layer_values": ["503"]},
            "fault.http.delay.fixed_delay_percent": {"final_value": "0", "layer_values": ["0"]},
            "fault.http.delay.fixed_duration_ms": {"final_value": "3000",
                                                   "layer_values": ["3000"]},
        }, "layers": ["disk_layer_0"]})
        rt.start()
        self.assertEqual((self.stat("load_success"), self.stat("num_keys"),
                          self.stat("num_layers"), self.stat("override_dir_not_exists")),
                         (2, 4, 1, 2))
        self.assertFalse(rt.snapshot().featureEnabled("fault.http.abort.abort_percent", 100))
        rt.stop()


class ServerWiringTests(SynchronousTestCase):
    """The server builds the runtime; the admin serves it."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        bootstrap = json_format.ParseDict({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": 0}}},
            "layered_runtime": {"layers": [
                {"name": "static", "static_layer": {"overload": {
                    "global_downstream_max_connections": 1000}}},
                {"name": "admin", "admin_layer": {}}]}}, bootstrap_pb2.Bootstrap())
        self.server = Server(self.reactor, bootstrap)

    def request(self, method, path):
        site = self.server.admin.site
        proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 54321))
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 9),
                                    peerAddress=IPv4Address("TCP", "127.0.0.1", 54321))
        proto.makeConnection(transport)
        proto.dataReceived(("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                            % (method, path)).encode())
        head, _, body = transport.value().partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head.lower():
            out = b""
            while body:
                size, _, rest = body.partition(b"\r\n")
                n = int(size, 16)
                out, body = out + rest[:n], rest[n + 2:]
            body = out
        return status, body

    def test_runtimeIsShared(self):
        rt = self.server.runtime
        self.assertIsInstance(rt, Runtime)
        self.assertIs(self.server.context.runtime, rt)

    def test_adminRuntime(self):
        """Envoy's sample /runtime, then an override and its removal."""
        status, body = self.request("GET", "/runtime")
        self.assertEqual((status, json.loads(body)), (200, {
            "entries": {"overload.global_downstream_max_connections": {
                "layer_values": ["1000", ""], "final_value": "1000"}},
            "layers": ["static", "admin"]}))
        self.assertEqual(self.request("POST", "/runtime_modify?overload."
                                      "global_downstream_max_connections=5"), (200, b"OK\n"))
        snap = self.server.runtime.snapshot()
        self.assertEqual(snap.getInteger("overload.global_downstream_max_connections", 0), 5)
        self.request("POST", "/runtime_modify?overload.global_downstream_max_connections=")
        self.assertEqual(json.loads(self.request("GET", "/runtime")[1])["entries"], {
            "overload.global_downstream_max_connections": {"layer_values": ["1000", ""],
                                                           "final_value": "1000"}})

    def test_adminErrors(self):
        """Envoy's 503 bodies: a YAML error, no admin layer."""
        status, body = self.request("POST", "/runtime_modify?a=%5B")
        self.assertEqual(status, 503)
        self.assertTrue(body.startswith(b"yaml-cpp: error"))
        self.server.runtime.adminLayer = None
        self.assertEqual(self.request("POST", "/runtime_modify?a=1"),
                         (503, b"No admin layer specified"))

    def test_diskLayerAccepted(self):
        """A disk layer is no longer refused; rtds still is."""
        base = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, base)
        server = Server.fromConfig(MemoryReactorClock(), configDict={"layered_runtime": {
            "layers": [{"name": "d", "disk_layer": {"symlink_root": base + "/root"}}]}})
        self.assertEqual(server.runtime.layerNames, ["d"])
        e = self.assertRaises(ConfigError, Server.fromConfig, MemoryReactorClock(), configDict={
            "node": {"id": "n", "cluster": "c"}, "layered_runtime": {"layers": [
                {"name": "r", "rtds_layer": {"name": "r", "rtds_config": {
                    "path_config_source": {"path": "/x"}}}}]}})
        self.assertIn("layered_runtime.layers[0].rtds_layer", str(e))
