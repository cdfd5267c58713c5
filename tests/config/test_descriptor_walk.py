"""
Nothing in a config is accepted silently: every field of every message
txenvoy builds is either implemented or refused with its path.

The builders declare the fields they read to
L{txenvoy.config.fields.checkFields}, which refuses the rest; a message
read without it (a sub-message handed to a helper, an C{Any} unpacked by
hand) may drop a field without a word, as the upstream
C{HttpProtocolOptions} once dropped its C{http_filters}. This walk finds
those: it builds every example config and the one with every other
registered extension, finds in them every message of a type no builder
declared, walking the descriptors from the bootstrap down through each
C{typed_config} (and C{TypedStruct}), sets each field of it the config
leaves unset, and builds again: the field must be refused, with an error
naming its path.
"""

import copy
import glob
import json
import os

from google.protobuf import json_format
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import EXAMPLES
from tests.test_interfaces import EVERY_OTHER_EXTENSION
from txenvoy.config import protos, registry, typed_struct
from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import declaredFields, mapEntry
from txenvoy.config.loader import loadBootstrap
from txenvoy.config.registry import Category
from txenvoy.server.server import Server

_SAMPLES = {
    "google.protobuf.Duration": "1s",
    "google.protobuf.Timestamp": "2020-01-01T00:00:00Z",
    "google.protobuf.FieldMask": "a",
    "google.protobuf.Struct": {"a": 1},
    "google.protobuf.Value": 1,
    "google.protobuf.ListValue": [1],
    "google.protobuf.BoolValue": True,
    "google.protobuf.StringValue": "x",
    "google.protobuf.BytesValue": "eA==",
    "google.protobuf.DoubleValue": 1.0,
    "google.protobuf.FloatValue": 1.0,
    "google.protobuf.Any": {},
}


def _sample(fd):
    """A value that sets C{fd}: not its default, as plain JSON."""
    if fd.message_type is not None:
        name = fd.message_type.full_name
        value = _SAMPLES.get(name, 1 if name.startswith("google.protobuf.") else {})
    elif fd.enum_type is not None:
        numbers = [v.name for v in fd.enum_type.values if v.number != 0]
        value = numbers[0] if numbers else fd.enum_type.values[0].name
    elif fd.type == fd.TYPE_STRING:
        value = "x"
    elif fd.type == fd.TYPE_BYTES:
        value = "eA=="
    elif fd.type == fd.TYPE_BOOL:
        value = True
    elif fd.type in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
        value = 1.0
    else:
        value = 1
    if mapEntry(fd) is not None:
        return {"k": _sample(mapEntry(fd).fields_by_name["value"])}
    return [value] if fd.is_repeated else value


def _messages(data, desc, path, keys, out):
    """
    Append C{(desc, data, path, keys)} for every message in C{data} (the
    JSON of a C{desc}), C{typed_config} values included; C{keys} locate
    it in the whole config.
    """
    name = desc.full_name
    if name == "google.protobuf.Any":
        typeUrl = data.get("@type") if isinstance(data, dict) else None
        if not typeUrl:
            return
        try:
            inner = protos.messageClass(typeUrl).DESCRIPTOR
        except KeyError:
            return
        if typed_struct.isTypedStruct(inner.full_name):
            cls = typed_struct.messageClassFor(data.get("type_url", ""))
            if cls is not None and isinstance(data.get("value"), dict):
                _messages(data["value"], cls.DESCRIPTOR, path + ".value", keys + ("value",), out)
            return
        desc, name = inner, inner.full_name
    if name.startswith("google.protobuf.") or not isinstance(data, dict):
        return
    out.append((desc, data, path, keys))
    for fd in desc.fields:
        key = fd.name
        if key not in data:
            continue
        child = fd.message_type
        fieldPath = "%s.%s" % (path, key) if path else key
        entry = mapEntry(fd)
        if entry is not None:
            child = entry.fields_by_name["value"].message_type
            if child is not None:
                for k, v in data[key].items():
                    _messages(v, child, "%s[%s]" % (fieldPath, k), keys + (key, k), out)
        elif child is None:
            continue
        elif fd.is_repeated:
            for i, v in enumerate(data[key]):
                _messages(v, child, "%s[%d]" % (fieldPath, i), keys + (key, i), out)
        else:
            _messages(data[key], child, fieldPath, keys + (key,), out)


def _build(data):
    """The errors building C{data} gives, as one text ("" when it builds)."""
    try:
        Server(Clock(), loadBootstrap(None, json.dumps(data)), validateOnly=True)
    except ConfigError as e:
        return str(e)
    return ""


def _names(text, path):
    """Whether an error in C{text} names C{path} (or a field inside it)."""
    start = text.find(path)
    while start != -1:
        after = text[start + len(path):start + len(path) + 1]
        if not (after.isalnum() or after == "_"):
            return True
        start = text.find(path, start + 1)
    return False


def _set(data, keys, name, value):
    for key in keys:
        data = data[key]
    data[name] = value


def _corpus(extra=()):
    """
    Every example config that builds, the one with every other extension
    and the C{extra} C{(name, yaml)} ones.
    """
    global _base
    if _base is None:
        _base = _baseCorpus()
    configs = []
    for name, text in extra:
        proto = loadBootstrap(None, text)
        Server(Clock(), proto, validateOnly=True)
        configs.append((name, json_format.MessageToDict(proto, preserving_proto_field_name=True)))
    return _base + configs


_base = None


def _baseCorpus():
    configs = []
    for path in sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml"))):
        try:
            proto = loadBootstrap(path)
            Server(Clock(), proto, validateOnly=True)
        except ConfigError:
            continue
        configs.append((os.path.basename(path), proto))
    proto = loadBootstrap(None, EVERY_OTHER_EXTENSION)
    Server(Clock(), proto, validateOnly=True)
    configs.append(("EVERY_OTHER_EXTENSION", proto))
    return [(name, json_format.MessageToDict(proto, preserving_proto_field_name=True))
            for name, proto in configs]


def silentFields(extra=()):
    """
    C{{"<message type>.<field>": "<config>: <path>"}} for every field that
    a config may set without being refused and that no builder declared.
    """
    registry.loadPlugins()
    cwd = os.getcwd()
    os.chdir(EXAMPLES)
    try:
        corpus = _corpus(extra)
        from envoy.config.bootstrap.v3 import bootstrap_pb2

        # (type, field) -> (config index, keys, path)
        pending = {}
        for index, (_, data) in enumerate(corpus):
            found = []
            _messages(data, bootstrap_pb2.Bootstrap.DESCRIPTOR, "", (), found)
            for desc, message, path, keys in found:
                # A declared field is implemented; every other one must be
                # refused, here too (a second reader of the same message
                # may not have asked checkFields).
                declared = set(declaredFields(desc.full_name) or ())
                taken = {fd.containing_oneof.name for fd in desc.fields
                         if fd.name in message and fd.containing_oneof is not None}
                for fd in desc.fields:
                    if fd.name in declared or fd.name in message or (
                            fd.containing_oneof is not None
                                              and fd.containing_oneof.name in taken):
                        continue
                    key = "%s.%s" % (desc.full_name, fd.name)
                    if key not in pending:
                        fieldPath = "%s.%s" % (path, fd.name) if path else fd.name
                        pending[key] = (index, keys, fd, fieldPath)
                        if fd.containing_oneof is not None:
                            taken.add(fd.containing_oneof.name)
        # One build per config with every field set at once, then each
        # field not named on its own (an early error may hide later ones).
        silent = {}
        byConfig = {}
        for key, item in pending.items():
            byConfig.setdefault(item[0], []).append((key, item))
        for index, items in sorted(byConfig.items()):
            data = copy.deepcopy(corpus[index][1])
            for key, (_, keys, fd, _) in items:
                _set(data, keys, fd.name, _sample(fd))
            errors = _build(data)
            for key, (_, keys, fd, fieldPath) in items:
                if _names(errors, fieldPath):
                    continue
                alone = copy.deepcopy(corpus[index][1])
                _set(alone, keys, fd.name, _sample(fd))
                if not _build(alone):
                    silent[key] = "%s: %s" % (corpus[index][0], fieldPath)
        return silent
    finally:
        os.chdir(cwd)


class DescriptorWalkTests(SynchronousTestCase):

    def test_noFieldAcceptedSilently(self):
        """
        Every field set anywhere in a config of a message txenvoy builds is
        implemented (declared by its builder) or refused with its path.
        """
        self.assertEqual(silentFields(), {})

    def test_findsAMessageReadWithoutCheck(self):
        """
        An extension whose builder reads its message without declaring its
        fields is found: each field a config may set is named.
        """
        from txenvoy.extensions.filters.network.echo import createEcho

        typeName = "envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy"
        registry.extension(Category.NETWORK_FILTER, typeName)(createEcho)
        self.addCleanup(registry.unregister, registry.lookup(Category.NETWORK_FILTER, typeName))
        config = """
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: lax
        typed_config:
          "@type": type.googleapis.com/%s
          stat_prefix: a
""" % (typeName,)
        silent = silentFields([("lax", config)])
        self.assertEqual(
            silent[typeName + ".emit_dynamic_metadata"],
            "lax: static_resources.listeners[0].filter_chains[0].filters[0]"
            ".typed_config.emit_dynamic_metadata")
        self.assertNotIn(typeName + ".stat_prefix", silent)
