# -*- test-case-name: tests.runtime.test_runtime -*-
"""
Envoy's layered runtime (C{Runtime::LoaderImpl}): key/value settings that
change while the server runs, read by filters as feature flags and
percentages.

A L{Runtime} is built from the bootstrap's C{layered_runtime} on the main
thread. Each load merges its layers, in order, into an immutable
L{Snapshot}; a reload builds a new one and swaps the reference, so workers
call L{Runtime.snapshot} and read it without locks. Layers:

 - C{static_layer}: the C{Struct}, flattened to dotted keys;
 - C{disk_layer}: one key per file under C{symlink_root/subdirectory}
   (C{/<service cluster>} appended with C{append_service_cluster}),
   re-read when the root is swapped (polled once a second on the main
   reactor, where Envoy has an inotify C{MovedTo} watch);
 - C{admin_layer}: overrides set by C{POST /runtime_modify}.

C{rtds_layer} is not implemented.
"""

import collections
import math
import random
import re

from google.protobuf import struct_pb2, text_format
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from txenvoy.config.errors import ConfigError, UnsupportedField
from txenvoy.config.fields import checkFields
from txenvoy.lifecycle import StartStopService
from txenvoy.runtime import _disk

log = Logger(namespace="runtime")

_UINT64_MAX = 2 ** 64 - 1
_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1

#: C{envoy.type.v3.FractionalPercent.DenominatorType} -> the denominator.
DENOMINATORS = {0: 100, 1: 10000, 2: 1000000}
_DENOMINATOR_NAMES = {"HUNDRED": 100, "TEN_THOUSAND": 10000, "MILLION": 1000000}

FractionalPercent = collections.namedtuple("FractionalPercent", "numerator denominator")
FractionalPercent.__doc__ = """
A percentage as Envoy's C{FractionalPercent}: C{numerator} out of
C{denominator} (100, 10000 or 1000000, not the enum).
"""


# --- entries ---------------------------------------------------------------


class Entry:
    """
    One runtime value (Envoy's C{Snapshot::Entry}): the text as configured
    and what it parses to, worked out once when the layer is loaded.

    @ivar raw: the value's text (what C{/runtime} shows).
    @ivar uintValue: a non-negative integer (floats are floored), or C{None}.
    @ivar doubleValue: a float, or C{None}.
    @ivar boolValue: a boolean, or C{None}.
    @ivar fraction: a L{FractionalPercent}, or C{None}.
    """

    __slots__ = ("raw", "uintValue", "doubleValue", "boolValue", "fraction")

    def __init__(self, raw=""):
        self.raw = raw
        self.uintValue = None
        self.doubleValue = None
        self.boolValue = None
        self.fraction = None

    def __repr__(self):
        return "<Entry %r>" % (self.raw,)


def _setNumber(entry, value):
    entry.doubleValue = value
    if not math.isnan(value) and not math.isinf(value):
        if _INT32_MIN <= value < _INT32_MAX and value == int(value):
            entry.boolValue = value != 0
        if 0 <= value <= _UINT64_MAX:
            entry.uintValue = int(value)


# absl::SimpleAtod: decimal or exponent form, inf and nan; spaces around.
_DOUBLE = re.compile(
    r"^[ \t\n\v\f\r]*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)"
    r"[ \t\n\v\f\r]*$", re.I)


def _parseDouble(entry):
    if _DOUBLE.match(entry.raw):
        _setNumber(entry, float(entry.raw.strip(" \t\n\v\f\r")))


def _parseFraction(entry, struct):
    # Envoy's parseFractionValue: only numerator/denominator fields, the
    # denominator by name; anything else leaves the entry without one.
    numerator, denominator = 0, 100
    for name, value in struct.fields.items():
        kind = value.WhichOneof("kind")
        if name == "numerator":
            if kind == "number_value":
                numerator = int(value.number_value) & 0xFFFFFFFF
        elif name == "denominator" and kind == "string_value":
            if value.string_value not in _DENOMINATOR_NAMES:
                return
            denominator = _DENOMINATOR_NAMES[value.string_value]
        else:
            return
    entry.fraction = FractionalPercent(numerator, denominator)


def _formatNumber(number):
    """
    How a number of a C{static_layer} is shown. Envoy's YAML reader keeps
    an int32 literal as a number, printed with six significant digits
    (C{1234567} shows as C{1.23457e+06}), and every other number as the
    text written. txenvoy's reader keeps only the number, so an integral
    value in int32 range is printed as Envoy prints such a literal, other
    integers in full, and fractions in their shortest form.
    """
    if math.isnan(number) or math.isinf(number):
        return "%g" % (number,)
    if number == int(number):
        if _INT32_MIN <= number <= _INT32_MAX:
            return "%.6g" % (number,)
        return "%d" % (number,)
    return repr(number)


def entryFromValue(value, raw=""):
    """
    Envoy's C{SnapshotImpl::createEntry}: an L{Entry} from a
    C{google.protobuf.Value}, with C{raw} as its text when given.
    Strings are parsed as numbers only (Envoy 1.40 rejects booleans and
    fractions written as strings).
    """
    kind = value.WhichOneof("kind")
    entry = Entry(value.string_value if kind == "string_value" else "")
    if raw:
        entry.raw = raw
    if kind == "number_value":
        _setNumber(entry, value.number_value)
        if not entry.raw:
            entry.raw = _formatNumber(value.number_value)
    elif kind == "bool_value":
        entry.boolValue = value.bool_value
        if not entry.raw:
            entry.raw = "true" if value.bool_value else "false"
    elif kind == "struct_value":
        if not entry.raw:
            entry.raw = text_format.MessageToString(value.struct_value)
        _parseFraction(entry, value.struct_value)
    elif kind == "string_value":
        _parseDouble(entry)
    return entry


# --- YAML values, read as Envoy's yaml-cpp conversion reads them ----------------

_YAML_NULL = frozenset(("~", "null", "Null", "NULL", ""))
_YAML_BOOLS = {}
for _t, _f in (("y", "n"), ("yes", "no"), ("true", "false"), ("on", "off")):
    for _case in (str.lower, str.upper, str.capitalize):
        _YAML_BOOLS[_case(_t)] = True
        _YAML_BOOLS[_case(_f)] = False
# yaml-cpp reads integers with C++ stream base detection.
_YAML_INT = re.compile(r"^[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")


class RuntimeYamlError(ValueError):
    """A runtime value is not valid YAML."""


def _yamlToValue(node, value):
    import yaml

    if isinstance(node, yaml.ScalarNode):
        text = node.value
        if node.style:
            # Quoted and block scalars are strings, whatever they say
            # (a plain scalar's style is None, or "" from libyaml).
            value.string_value = text
        elif text in _YAML_NULL:
            value.null_value = struct_pb2.NULL_VALUE
        elif text in _YAML_BOOLS:
            value.bool_value = _YAML_BOOLS[text]
        elif _YAML_INT.match(text) and -(2 ** 63) <= _cppInt(text) < 2 ** 63:
            n = _cppInt(text)
            if _INT32_MIN <= n <= _INT32_MAX:
                value.number_value = n
            else:
                value.string_value = str(n)
        else:
            value.string_value = text
    elif isinstance(node, yaml.MappingNode):
        struct = value.struct_value
        struct.SetInParent()
        for keyNode, valueNode in node.value:
            _yamlToValue(valueNode, struct.fields[str(keyNode.value)])
    elif isinstance(node, yaml.SequenceNode):
        values = value.list_value
        values.SetInParent()
        for item in node.value:
            _yamlToValue(item, values.values.add())


def _cppInt(text):
    sign, digits = (-1, text[1:]) if text[:1] == "-" else (1, text.lstrip("+"))
    if digits[:2] in ("0x", "0X"):
        return sign * int(digits[2:], 16)
    if len(digits) > 1 and digits[0] == "0":
        return sign * int(digits[1:], 8)
    return sign * int(digits)


def valueFromYaml(text):
    """
    Envoy's C{ValueUtil::loadFromYaml}: the C{google.protobuf.Value} a disk
    file or an admin override stands for.

    @raise RuntimeYamlError: when C{text} is not YAML.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        if mark is not None:
            raise RuntimeYamlError("yaml-cpp: error at line %d, column %d: %s"
                                   % (mark.line + 1, mark.column + 1, problem))
        raise RuntimeYamlError("yaml-cpp: error: %s" % (problem,))
    value = struct_pb2.Value()
    if node is None:
        value.null_value = struct_pb2.NULL_VALUE
    else:
        _yamlToValue(node, value)
    return value


def entryFromText(text):
    """An L{Entry} for a disk file's or an admin override's text."""
    return entryFromValue(valueFromYaml(text), text)


# --- layers and snapshots ------------------------------------------------------


class OverrideLayer:
    """
    One layer of a snapshot (Envoy's C{OverrideLayer}).

    @ivar name: the layer's configured name.
    @ivar values: C{{key: Entry}}; never changed once the layer is built.
    """

    __slots__ = ("name", "values")

    def __init__(self, name, values):
        self.name = name
        self.values = values

    def __repr__(self):
        return "<OverrideLayer %s: %d keys>" % (self.name, len(self.values))


def staticLayerValues(struct, path=""):
    """
    Envoy's C{ProtoLayer}: a C{static_layer} C{Struct} flattened to dotted
    keys. A C{Struct} that is empty or names a C{numerator} or a
    C{denominator} is one value (a fractional percent), not a level.

    @raise ConfigError: for a list or a null, with Envoy's message.
    """
    values = {}
    for name, value in struct.fields.items():
        _walkValue(value, name, values, path)
    return values


def _walkValue(value, prefix, values, path):
    kind = value.WhichOneof("kind")
    if kind in (None, "list_value", "null_value"):
        raise ConfigError("%s: Invalid runtime entry value for %s" % (path, prefix))
    if kind == "struct_value":
        fields = value.struct_value.fields
        if not fields or "numerator" in fields or "denominator" in fields:
            values[prefix] = entryFromValue(value)
            return
        for name, child in fields.items():
            _walkValue(child, prefix + "." + name, values, path)
        return
    values[prefix] = entryFromValue(value)


def _uint64(randomValue):
    return randomValue & _UINT64_MAX


class Snapshot:
    """
    The runtime at one moment (Envoy's C{SnapshotImpl}): immutable, so any
    thread may read it; a reload makes a new one.

    @ivar layers: the L{OverrideLayer}s, in order.
    @ivar values: C{{key: Entry}}, the later layers winning.
    """

    def __init__(self, layers, rng=None):
        """
        @param layers: L{OverrideLayer}s, lowest priority first.
        @param rng: a function returning a random 64-bit integer.
        """
        self.layers = tuple(layers)
        merged = {}
        for layer in self.layers:
            merged.update(layer.values)
        self.values = merged
        self._random = rng or _defaultRandom

    def get(self, key):
        """@return: the value's text, or C{None} when the key is not set."""
        entry = self.values.get(key)
        return None if entry is None else entry.raw

    def getInteger(self, key, default):
        """@return: the value as a non-negative integer, else C{default}."""
        entry = self.values.get(key)
        if entry is None or entry.uintValue is None:
            return default
        return entry.uintValue

    def getDouble(self, key, default):
        """@return: the value as a float, else C{default}."""
        entry = self.values.get(key)
        if entry is None or entry.doubleValue is None:
            return default
        return entry.doubleValue

    def getBoolean(self, key, default):
        """
        @return: the value as a boolean (C{true}/C{false}, or an integer:
            non-zero is true), else C{default}.
        """
        entry = self.values.get(key)
        if entry is None or entry.boolValue is None:
            return default
        return entry.boolValue

    def featureEnabled(self, key, defaultValue, randomValue=None, numBuckets=100):
        """
        Envoy's C{featureEnabled(key, default_value[, random_value])}: the
        integer at C{key} (else C{defaultValue}) is a percentage.

        @param randomValue: an integer to decide with; drawn when C{None}.
        """
        cutoff = min(self.getInteger(key, defaultValue), numBuckets)
        if randomValue is None:
            # As Envoy does, no random draw when the answer is certain.
            if cutoff <= 0:
                return False
            if cutoff >= numBuckets:
                return True
            randomValue = self._random()
        return _uint64(randomValue) % numBuckets < cutoff

    def featureEnabledFractional(self, key, default, randomValue=None):
        """
        Envoy's C{featureEnabled(key, FractionalPercent default[, random])}:
        the value at C{key} may be a fractional percent (a YAML mapping
        with C{numerator} and C{denominator}) or an integer percent (above
        100 is always on); otherwise C{default} decides.

        @param default: a C{FractionalPercent} message or a
            L{FractionalPercent}.
        """
        entry = self.values.get(key)
        if entry is not None and entry.fraction is not None:
            percent = entry.fraction
        elif entry is not None and entry.uintValue is not None:
            if entry.uintValue > 100:
                return True
            percent = FractionalPercent(entry.uintValue, 100)
        else:
            percent = fractionalPercent(default)
        if randomValue is None:
            randomValue = self._random()
        return _uint64(randomValue) % percent.denominator < percent.numerator

    def __contains__(self, key):
        return key in self.values

    def __repr__(self):
        return "<Snapshot %d layers, %d keys>" % (len(self.layers), len(self.values))


def fractionalPercent(value):
    """
    A L{FractionalPercent} from an C{envoy.type.v3.FractionalPercent}
    message (or a L{FractionalPercent}, returned as is).
    """
    if isinstance(value, FractionalPercent):
        return value
    # Every field is read: declared for the table of supported fields.
    checkFields(value, ("numerator", "denominator"), "")
    return FractionalPercent(value.numerator, DENOMINATORS.get(value.denominator, 100))


def _defaultRandom(_random=random.Random()):
    return _random.getrandbits(64)


class RuntimeFractionalPercent:
    """
    A compiled C{envoy.config.core.v3.RuntimeFractionalPercent}
    (C{default_value} and C{runtime_key}), as filters configure sampling.
    """

    def __init__(self, message):
        checkFields(message, ("default_value", "runtime_key"), "")
        self.default = fractionalPercent(message.default_value)
        self.runtimeKey = message.runtime_key

    def enabled(self, snapshot, randomValue=None):
        """Whether this one is in, by the snapshot's value or the default."""
        return snapshot.featureEnabledFractional(self.runtimeKey, self.default, randomValue)


class RuntimeFeatureFlag:
    """
    A compiled C{envoy.config.core.v3.RuntimeFeatureFlag} (C{default_value}
    and C{runtime_key}).
    """

    def __init__(self, message):
        checkFields(message, ("default_value", "runtime_key"), "")
        self.default = message.default_value.value
        self.runtimeKey = message.runtime_key

    def enabled(self, snapshot):
        """The snapshot's boolean at the key, else the default."""
        return snapshot.getBoolean(self.runtimeKey, self.default)


# --- the loader ------------------------------------------------------------------


class NoAdminLayer(Exception):
    """C{/runtime_modify} without an C{admin_layer} configured."""

    def __str__(self):
        return "No admin layer specified"


class AdminLayer:
    """
    The C{admin_layer}: overrides set at run time. Every change makes the
    runtime load a new snapshot.

    @ivar name: the layer's configured name.
    @ivar values: C{{key: Entry}}, replaced (never changed) on each update.
    """

    def __init__(self, name, runtime):
        self.name = name
        self.values = {}
        self._runtime = runtime

    def set(self, key, value):
        """Override C{key}; an empty C{value} removes the override."""
        self.mergeValues({key: value})

    def mergeValues(self, items):
        """
        Apply C{{key: text}} at once (Envoy's C{AdminLayer::mergeValues}),
        then load a new snapshot. An empty text removes the key.

        @raise RuntimeYamlError: if a text is not YAML; nothing changes.
        """
        parsed = {key: entryFromText(text) for key, text in items.items() if text != ""}
        values = dict(self.values)
        for key, text in items.items():
            values.pop(key, None)
            if text != "":
                values[key] = parsed[key]
        self.values = values
        self._runtime._adminOverridesActive.set(1 if values else 0)
        self._runtime.loadNewSnapshot()


class _NullStat:
    def inc(self, amount=1):
        pass

    def set(self, value):
        pass


class _NullScope:
    def counter(self, name):
        return _NullStat()

    def gauge(self, name):
        return _NullStat()


class _DiskLayerConfig:
    def __init__(self, name, symlinkRoot, path):
        self.name = name
        self.symlinkRoot = symlinkRoot
        self.path = path


class Runtime(StartStopService):
    """
    The runtime loader (Envoy's C{Runtime::LoaderImpl}); main thread only,
    except L{snapshot}, which any thread may call. As a service of the
    server it loads again and watches its disk layers while running.

    @ivar adminLayer: the L{AdminLayer}, or C{None} without one.
    @ivar layerNames: the configured layer names, in order.
    """

    #: Seconds between checks of the disk layers' roots.
    pollInterval = 1.0

    def __init__(self, reactor, layeredRuntime=None, stats=None, serviceCluster="",
                 rng=None, path="layered_runtime"):
        """
        @param reactor: the main reactor (the disk layers' poll timer).
        @param layeredRuntime: the bootstrap's C{LayeredRuntime}; C{None}
            or an empty one gives no layers at all, as in Envoy 1.40.
        @param stats: the main thread's stats shard (C{runtime.*}).
        @param serviceCluster: the node's cluster, for
            C{append_service_cluster}.
        @param rng: a function returning a random 64-bit integer.
        @param path: the field path of C{layeredRuntime}, for messages.
        @raise ConfigError: with Envoy's message, for a duplicate layer name,
            a second admin layer, a disk layer whose root cannot be watched
            or a static value that is a list or a null.
        @raise UnsupportedField: for an C{rtds_layer}.
        """
        self.reactor = reactor
        self._random = rng or _defaultRandom
        scope = stats.scope("runtime.") if stats is not None else _NullScope()
        self._loadSuccess = scope.counter("load_success")
        self._loadError = scope.counter("load_error")
        self._overrideDirExists = scope.counter("override_dir_exists")
        self._overrideDirNotExists = scope.counter("override_dir_not_exists")
        self._numKeys = scope.gauge("num_keys")
        self._numLayers = scope.gauge("num_layers")
        self._adminOverridesActive = scope.gauge("admin_overrides_active")
        scope.counter("deprecated_feature_use")
        scope.gauge("deprecated_feature_seen_since_process_start")
        self.adminLayer = None
        self.layerNames = []
        self._layers = []
        self._roots = {}
        self._started = False
        self._poller = None
        self._identities = {}
        self._snapshot = None
        layers = layeredRuntime.layers if layeredRuntime is not None else ()
        seen = set()
        for i, layer in enumerate(layers):
            lpath = "%s.layers[%d]" % (path, i)
            if layer.name in seen:
                raise ConfigError("%s.name: Duplicate layer name: %s" % (lpath, layer.name))
            seen.add(layer.name)
            self.layerNames.append(layer.name)
            kind = layer.WhichOneof("layer_specifier")
            if kind == "static_layer":
                self._layers.append(OverrideLayer(
                    layer.name, staticLayerValues(layer.static_layer, lpath + ".static_layer")))
            elif kind == "admin_layer":
                if self.adminLayer is not None:
                    raise ConfigError("%s.admin_layer: Too many admin layers specified in "
                                      "LayeredRuntime, at most one may be specified" % (lpath,))
                self.adminLayer = AdminLayer(layer.name, self)
                self._layers.append(self.adminLayer)
            elif kind == "disk_layer":
                self._layers.append(self._diskLayerConfig(layer, lpath, serviceCluster))
            elif kind == "rtds_layer":
                raise UnsupportedField(lpath + ".rtds_layer")
            else:
                raise ConfigError("%s: layer specifier not set" % (lpath,))
        self.loadNewSnapshot()

    def _diskLayerConfig(self, layer, path, serviceCluster):
        disk = layer.disk_layer
        checkFields(disk, ("symlink_root", "subdirectory", "append_service_cluster"),
                    path + ".disk_layer")
        problem = _disk.checkWatchable(disk.symlink_root)
        if problem is not None:
            raise ConfigError("%s.disk_layer.symlink_root: %s" % (path, problem))
        directory = disk.symlink_root + "/" + disk.subdirectory
        if disk.append_service_cluster:
            directory += "/" + serviceCluster
        # Envoy adds one watch per disk layer, so a swap of a root that
        # several layers share reloads once per layer.
        self._roots[disk.symlink_root] = self._roots.get(disk.symlink_root, 0) + 1
        return _DiskLayerConfig(layer.name, disk.symlink_root, directory)

    # Loading.

    def snapshot(self):
        """The current L{Snapshot} (any thread; never changes once made)."""
        return self._snapshot

    def loadNewSnapshot(self):
        """
        Merge the layers into a new L{Snapshot} and swap it in (main
        thread). A disk layer whose directory is missing is left out; one
        that cannot be read is left out and counted in
        C{runtime.load_error}.
        """
        layers = []
        diskLayers = errors = 0
        for layer in self._layers:
            if isinstance(layer, _DiskLayerConfig):
                if not _disk.isDirectory(layer.path):
                    continue
                try:
                    texts = _disk.walk(layer.path)
                    values = {key: entryFromText(text) for key, text in texts.items()}
                except (_disk.DiskLayerError, RuntimeYamlError) as e:
                    errors += 1
                    log.debug("error loading runtime values for layer {name} from disk: {why}",
                              name=layer.name, why=str(e))
                    continue
                layers.append(OverrideLayer(layer.name, values))
                diskLayers += 1
            else:
                layers.append(OverrideLayer(layer.name, layer.values))
        self._numLayers.set(len(layers))
        if errors:
            self._loadError.inc()
        else:
            self._loadSuccess.inc()
        # Envoy's quirk: "exists" only counts with more than one disk layer.
        if diskLayers > 1:
            self._overrideDirExists.inc()
        else:
            self._overrideDirNotExists.inc()
        snapshot = Snapshot(layers, self._random)
        self._numKeys.set(len(snapshot.values))
        self._snapshot = snapshot
        return snapshot

    def mergeValues(self, items):
        """
        C{POST /runtime_modify}: apply C{{key: text}} to the admin layer.

        @raise NoAdminLayer: when none is configured.
        @raise RuntimeYamlError: for a value that is not YAML.
        """
        if self.adminLayer is None:
            raise NoAdminLayer()
        self.adminLayer.mergeValues(items)

    # Watching the disk layers.

    def start(self):
        """
        Load again, as Envoy does once the server initializes, and start
        polling the disk layers' roots on the main reactor.
        """
        if self._started:
            return
        self._started = True
        self._identities = {root: _disk.rootIdentity(root) for root in self._roots}
        self.loadNewSnapshot()
        if self._roots:
            self._poller = LoopingCall(self.checkRoots)
            self._poller.clock = self.reactor
            self._poller.start(self.pollInterval, now=False)

    def stop(self):
        """Stop polling."""
        self._started = False
        poller, self._poller = self._poller, None
        if poller is not None and poller.running:
            poller.stop()

    def checkRoots(self):
        """
        Reload for every disk layer whose root was replaced since the last
        check (a new symlink or directory renamed over it).
        """
        for root, watches in self._roots.items():
            identity = _disk.rootIdentity(root)
            if identity == self._identities.get(root):
                continue
            self._identities[root] = identity
            if identity is None:
                # Gone: no MovedTo, no reload.
                continue
            for _ in range(watches):
                self.loadNewSnapshot()

    # What the admin shows.

    def dump(self):
        """
        C{GET /runtime}: C{{"entries": {key: {"final_value", "layer_values"}},
        "layers": [names]}} of the current snapshot, as Envoy prints it.
        """
        snapshot = self._snapshot
        keys = set()
        for layer in snapshot.layers:
            keys.update(layer.values)
        entries = {}
        for key in sorted(keys):
            layerValues = []
            for layer in snapshot.layers:
                entry = layer.values.get(key)
                layerValues.append("" if entry is None else entry.raw)
            entries[key] = {"final_value": snapshot.get(key) or "",
                            "layer_values": layerValues}
        return {"entries": entries, "layers": [layer.name for layer in snapshot.layers]}

    def __repr__(self):
        return "<Runtime layers=%r>" % (self.layerNames,)
