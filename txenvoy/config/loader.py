# -*- test-case-name: tests.config.test_loader -*-
"""
Load an Envoy v3 bootstrap with Envoy's strictness.

The path a config takes is Envoy's own (C{InstanceUtil::loadBootstrapConfig}):
the file given with C{-c} is parsed by its extension (YAML for C{.yaml} and
C{.yml}, text proto for C{.pb_text}, binary for C{.pb}, JSON for anything
else), the C{--config-yaml} string is parsed on its own and merged over it
(repeated fields appended, scalars replaced), and only then is the whole
result validated (L{txenvoy.config.validation}) and cross-checked
(L{txenvoy.config.checks}).

Between YAML and protobuf sits a walk over the data guided by the message
descriptors. It reproduces what Envoy's parser accepts beyond strict proto
JSON (a mapping where a list is expected, quoted numbers and booleans, the
object form of durations and wrappers), imports the module of every
C{typed_config} C{@type} it meets, and reports mistakes with Envoy's own
phrases and the field path (C{static_resources.clusters[0].connect_timeout}).
"""

import base64
import json
import math
import os
import re

from txenvoy.config.errors import (
    FAILED,
    NO_CONFIG,
    ConfigError,
    SourceLines,
    UnknownExtension,
    attempt,
    collectErrors,
    report,
    setSource,
)
from txenvoy.config import typed_struct
from txenvoy.config.fields import mapEntry


# --- YAML, read as Envoy's yaml-cpp reads it ---------------------------------

_yamlLoaderClass = None


def _yamlLoader():
    """
    A PyYAML loader that resolves plain scalars as Envoy's YAML-to-JSON
    conversion does: YAML 1.1 booleans including C{y}/C{n}, decimal, hex
    and octal integers, floats with or without a dot, no timestamps (a date
    stays a string), no C{<<} merge keys (Envoy rejects them as an unknown
    field), and mapping keys kept as the raw text written.
    """
    global _yamlLoaderClass
    if _yamlLoaderClass is not None:
        return _yamlLoaderClass
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class EnvoyYamlLoader(base):
        yaml_implicit_resolvers = {}
        bool_values = dict(yaml.SafeLoader.bool_values, y=True, n=False)

        def construct_mapping(self, node, deep=False):
            if not isinstance(node, yaml.MappingNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "expected a mapping node, but found %s" % node.id,
                    node.start_mark)
            mapping = {}
            for keyNode, valueNode in node.value:
                if not isinstance(keyNode, yaml.ScalarNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        "found a mapping key that is not a scalar",
                        keyNode.start_mark)
                # Envoy turns every key into its raw text: 'on', 'y' and
                # '1' stay strings.
                mapping[keyNode.value] = self.construct_object(valueNode, deep=deep)
            return mapping

    resolvers = [
        ("tag:yaml.org,2002:bool",
         r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE"
         r"|on|On|ON|off|Off|OFF)$",
         "yYnNtTfFoO"),
        ("tag:yaml.org,2002:int",
         r"^(?:[-+]?0x[0-9a-fA-F]+|[-+]?0o[0-7]+|[-+]?[0-9]+)$",
         "-+0123456789"),
        ("tag:yaml.org,2002:float",
         r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][-+]?[0-9]+)?"
         r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
         "-+0123456789."),
        ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ]
    for tag, regexp, first in resolvers:
        EnvoyYamlLoader.add_implicit_resolver(tag, re.compile(regexp), list(first))
    _yamlLoaderClass = EnvoyYamlLoader
    return EnvoyYamlLoader


def _yamlErrorMessage(error, text):
    import yaml

    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    start = getattr(error, "context_mark", None)
    detail = problem
    if context:
        detail = "%s, %s" % (problem, context)
        if (start is not None and mark is not None and start.line != mark.line
                and ("flow" in context or "quoted" in context)):
            # An unclosed quote or bracket: the mistake is where it was
            # opened, not where the parser gave up.
            detail = "%s started at line %d, column %d" % (
                detail, start.line + 1, start.column + 1)
    if "cannot start any token" in problem and mark is not None:
        lines = text.splitlines()
        if 0 <= mark.line < len(lines) and lines[mark.line][mark.column:].startswith("\t"):
            detail = "%s (YAML does not allow a tab for indentation)" % (detail,)
    if mark is None or not isinstance(error, yaml.MarkedYAMLError):
        return "yaml: error: %s" % (" ".join(str(error).split()),)
    # libyaml says "did not find expected node content" where yaml-cpp says
    # "illegal block entry": a block sequence '- ' inside a flow collection.
    lines = text.splitlines()
    if 0 <= mark.line < len(lines):
        rest = lines[mark.line][mark.column:]
        if rest.startswith("-") and "node content" in problem:
            detail = "illegal block entry: %s" % (detail,)
    return "yaml: error at line %d, column %d: %s" % (
        mark.line + 1, mark.column + 1, " ".join(detail.split()))


def parseYaml(text):
    """
    Parse YAML text as Envoy does.

    @return: the plain Python value (C{None} for an empty document).
    @raise ConfigError: a syntax error, with its line and column.
    """
    return parseYamlWithLines(text)[0]


def _lineMap(root):
    """
    Field path -> 1-based line of every key and list item under a YAML
    node, with the paths the config errors use (C{a.b[0].c}; a map key both
    as C{a.b} and C{a[b]}).
    """
    import yaml

    lines = {}
    stack = [(root, "")]
    seen = set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            # An alias: its lines are those of the anchor (and it may
            # contain itself).
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for keyNode, valueNode in node.value:
                if not isinstance(keyNode, yaml.ScalarNode):
                    continue
                line = keyNode.start_mark.line + 1
                child = "%s.%s" % (path, keyNode.value) if path else keyNode.value
                lines.setdefault(child, line)
                if path:
                    lines.setdefault("%s[%s]" % (path, keyNode.value), line)
                stack.append((valueNode, child))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = "%s[%d]" % (path, i)
                lines.setdefault(child, item.start_mark.line + 1)
                stack.append((item, child))
    return lines


def parseYamlWithLines(text):
    """
    Parse YAML text as Envoy does, keeping where each field is.

    @return: C{(value, SourceLines)}; the value is C{None} for an empty
        document.
    @raise ConfigError: a syntax error, with its line and column.
    """
    import yaml

    try:
        loader = _yamlLoader()(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, SourceLines({})
            return loader.construct_document(node), SourceLines(_lineMap(node))
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise ConfigError(_yamlErrorMessage(e, text))
    except RecursionError:
        raise ConfigError("yaml: error: the document nests too deeply")
    except Exception as e:
        raise ConfigError("yaml: error: %s" % (" ".join(str(e).split()) or type(e).__name__,))


def _parseJson(text, typeName):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            "Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in %s, "
            "near %d:%d: %s)" % (typeName, e.lineno, e.colno, e.msg))
    except (ValueError, RecursionError) as e:
        raise ConfigError(
            "Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in %s: %s)"
            % (typeName, " ".join(str(e).split()) or "nests too deeply"))


# --- the descriptor-guided walk ----------------------------------------------

_INT_RANGES = {}
_fieldMaps = {}

_WRAPPERS = frozenset(
    "google.protobuf." + n for n in (
        "DoubleValue", "FloatValue", "Int64Value", "UInt64Value", "Int32Value",
        "UInt32Value", "BoolValue", "StringValue", "BytesValue"))

# Types whose JSON form is not an object of their fields; inside an Any
# they are written as {"@type": ..., "value": <json>}.
_SPECIAL_JSON = _WRAPPERS | frozenset(
    "google.protobuf." + n for n in (
        "Any", "Duration", "Timestamp", "FieldMask", "Struct", "Value", "ListValue"))

_INTEGER_RE = re.compile(r"^[-+]?[0-9]+$")
_NUMBER_RE = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")
_DURATION_RE = re.compile(r"^(-?)([0-9]+)(?:\.([0-9]{0,9}))?$")
_MAX_DURATION_SECONDS = 315576000000


class _Walk:
    """
    One walk over plain data for one root message type: checks it, fixes up
    Envoy's leniencies and returns data that C{json_format.ParseDict}
    accepts.
    """

    def __init__(self, rootName, unknown=None):
        self.rootName = rootName
        # --allow-unknown-static-fields: unknown fields are dropped and
        # described here instead of failing the config.
        self.unknown = unknown

    # messages
    def _at(self, path):
        return " @ %s" % (path,) if path else ""

    def parseError(self, path, what, detail):
        return ConfigError(
            "Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in %s%s: %s: %s)"
            % (self.rootName, self._at(path), what, detail))

    def unknownError(self, path, what, detail):
        return ConfigError(
            "Protobuf message (type %s reason INVALID_ARGUMENT: invalid JSON in %s%s: "
            "%s: %s) has unknown fields"
            % (self.rootName, self.rootName, self._at(path), what, detail))

    def unexpected(self, value, expected):
        return "unexpected character: '%s'; expected '%s'" % (_jsonText(value)[:1], expected)

    # fields
    def message(self, desc, value, path):
        special = _SPECIAL_HANDLERS.get(desc.full_name)
        if special is not None:
            return special(self, desc, value, path)
        if not isinstance(value, dict):
            raise self.parseError(path, "message " + desc.full_name, self.unexpected(value, "{"))
        fields = _fieldMap(desc)
        out = {}
        for key, item in value.items():
            key = _keyText(key)
            fd = fields.get(key)
            if fd is None:
                if self.unknown is not None:
                    self.unknown.append(
                        "Unknown field: type %s reason INVALID_ARGUMENT: invalid JSON in %s%s: "
                        "message %s: no such field: '%s'" % (self.rootName, self.rootName,
                                                             self._at(path), desc.full_name, key))
                    continue
                error = self.unknownError(
                    path, "message " + desc.full_name, "no such field: '%s'" % (key,))
                # Envoy names the message; the line is the key's own.
                error.path = _join(path, key)
                report(error)
                continue
            if item is None and not _keepsNull(fd):
                # JSON null means "not set"; dropping it is the same thing.
                continue
            # Inside a collection of errors a bad field is reported and
            # left out, and the next one checked.
            value = attempt(self.field, fd, item, _join(path, fd.name))
            if value is not FAILED:
                out[key] = value
        return out

    def field(self, fd, value, path):
        entry = mapEntry(fd)
        if entry is not None:
            return self.mapField(entry, value, path)
        if fd.is_repeated:
            if not isinstance(value, list):
                # Envoy takes a single value where a list is expected as a
                # one-element list (envoyproxy/examples dynamic-config-fs
                # writes `filters:` as a mapping).
                return [self.single(fd, value, path, repeated=True)]
            items = _flatten(value)
            return [
                self.single(fd, item, "%s[%d]" % (path, i), repeated=True)
                for i, item in enumerate(items)
            ]
        return self.single(fd, value, path)

    def mapField(self, entry, value, path):
        keyField = entry.fields_by_name["key"]
        valueField = entry.fields_by_name["value"]
        if not isinstance(value, dict):
            raise self.parseError(path, "map " + entry.full_name, self.unexpected(value, "{"))
        out = {}
        for key, item in value.items():
            key = _keyText(key)
            itemPath = "%s[%s]" % (path, key)
            if keyField.type != keyField.TYPE_STRING:
                self.scalar(keyField, key, itemPath, "map key")
            if item is None:
                if valueField.message_type is None:
                    raise self.parseError(itemPath, "map value", "null is not allowed")
                item = {}
            out[key] = self.single(valueField, item, itemPath)
        return out

    def single(self, fd, value, path, repeated=False):
        if value is None and repeated:
            # Envoy reads a null element as the default value: an empty
            # message, "", 0 or false.
            if fd.message_type is not None:
                value = {}
            else:
                return _defaultJson(fd)
        if fd.message_type is not None:
            return self.message(fd.message_type, value, path)
        if fd.enum_type is not None:
            return self.enum(fd.enum_type, value, path)
        return self.scalar(fd, value, path)

    def enum(self, enumDesc, value, path):
        if enumDesc.full_name == "google.protobuf.NullValue":
            return value
        if isinstance(value, str):
            names = enumDesc.values_by_name
            if value in names:
                return value
            # Envoy parses enums case-insensitively: it tries the name
            # upper-cased (codec_type: auto, lb_policy: round_robin).
            if value.upper() in names:
                return value.upper()
            # ... and takes a number written as a string ("2").
            text = value.strip()
            if _INTEGER_RE.match(text) and -2 ** 31 <= int(text) < 2 ** 31:
                return int(text)
        elif isinstance(value, int) and not isinstance(value, bool):
            # An undefined number parses; validation's defined_only rejects
            # it where the schema asks, as in Envoy.
            if -2 ** 31 <= value < 2 ** 31:
                return value
        raise ConfigError(
            "unknown enum value '%s' for field %s @ %s (%s: one of %s, in any case)"
            % (_scalarText(value), path.rsplit(".", 1)[-1].split("[", 1)[0], path,
               enumDesc.full_name, ", ".join(v.name for v in enumDesc.values)))

    def scalar(self, fd, value, path, what=None):
        t = fd.type
        what = what or _scalarName(fd)
        if t == fd.TYPE_STRING:
            if isinstance(value, str):
                return value
            raise self.parseError(path, what, self.unexpected(value, '"'))
        if t == fd.TYPE_BYTES:
            if isinstance(value, str) and _BASE64_RE.match(value):
                try:
                    base64.urlsafe_b64decode(
                        value.replace("+", "-").replace("/", "_").rstrip("=")
                        + "=" * (-len(value.rstrip("=")) % 4))
                    return value
                except (ValueError, TypeError):
                    pass
            if not isinstance(value, str):
                raise self.parseError(path, what, self.unexpected(value, '"'))
            raise self.parseError(path, what, "invalid base64")
        if t == fd.TYPE_BOOL:
            if isinstance(value, bool):
                return value
            if value == "true" or value == "false":
                return value == "true"
            raise self.parseError(path, what, "expected 'true' or 'false'")
        if t in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
            return self.floating(fd, value, path, what)
        low, high = _intRange(fd)
        return self.integer(value, path, what, low, high)

    def integer(self, value, path, what, low, high):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self.parseError(path, what, "invalid number: '%s'" % (_scalarText(value),))
        if isinstance(value, str):
            text = value.strip()
            if _INTEGER_RE.match(text):
                value = int(text)
            elif _NUMBER_RE.match(text):
                value = float(text)
            else:
                raise self.parseError(path, what, "invalid number: '%s'" % (value,))
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.parseError(path, what, "invalid number: '%s'" % (value,))
            if not value.is_integer():
                raise self.parseError(
                    path, what, "expected integer, but JSON number had fractional part")
            value = int(value)
        if not low <= value <= high:
            raise self.parseError(path, what, "JSON number out of range for int")
        return value

    def floating(self, fd, value, path, what):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self.parseError(path, what, "invalid number: '%s'" % (_scalarText(value),))
        if isinstance(value, str):
            if value in ("NaN", "Infinity", "-Infinity"):
                return value
            if not _NUMBER_RE.match(value.strip()):
                raise self.parseError(path, what, "invalid number: '%s'" % (value,))
            value = float(value)
        if isinstance(value, int):
            value = float(value)
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if fd.type == fd.TYPE_FLOAT and abs(value) > 3.4028234663852886e38:
            raise self.parseError(path, what, "JSON number out of range for float")
        return value

    # well-known types
    def any(self, desc, value, path):
        from txenvoy.config import protos

        what = "message google.protobuf.Any"
        if not isinstance(value, dict):
            raise self.parseError(path, what, self.unexpected(value, "{"))
        if not value:
            return {}
        url = value.get("@type")
        if url is None:
            raise self.parseError(path, what, "missing @type")
        if not isinstance(url, str) or "/" not in url or not url.rsplit("/", 1)[-1]:
            raise self.parseError(
                path, what, "invalid @type '%s': a type URL needs a '/' and a type name"
                % (_scalarText(url),))
        typeName = url.rsplit("/", 1)[-1]
        if not protos.importTypeName(typeName) and not _typeFromPlugins(typeName):
            from txenvoy.config import registry

            if not registry.isEnvoyType(typeName) and not registry.isRegisteredType(typeName):
                raise UnknownExtension(path or "(root)", typeName)
            raise ConfigError(
                "Unable to parse JSON as proto (INVALID_ARGUMENT: could not find @type '%s') @ %s"
                % (url, path or "(root)"))
        from google.protobuf import descriptor_pool

        inner = descriptor_pool.Default().FindMessageTypeByName(typeName)
        if inner.full_name in _SPECIAL_JSON:
            extra = sorted(k for k in value if k not in ("@type", "value"))
            if extra:
                raise self.unknownError(
                    path, "message " + inner.full_name, "no such field: '%s'" % (extra[0],))
            if value.get("value") is None:
                raise self.parseError(
                    path, "message " + inner.full_name,
                    "a well-known type inside an Any needs its JSON in 'value'")
            return {"@type": url,
                    "value": _SPECIAL_HANDLERS[inner.full_name](
                        self, inner, value["value"], _join(path, "value"))}
        rest = {k: v for k, v in value.items() if k != "@type"}
        if typed_struct.isTypedStruct(typeName):
            return self.typedStruct(inner, url, rest, path)
        out = self.message(inner, rest, path)
        out["@type"] = url
        return out

    def typedStruct(self, desc, url, value, path):
        """
        A TypedStruct whose C{type_url} names a protobuf type: its C{value}
        is walked as that message (at C{<path>.value}), so it gets the same
        leniencies and the same errors as the direct form.
        """
        out = self.message(desc, value, path)
        out["@type"] = url
        cls = typed_struct.messageClassFor(out.get("type_url", ""))
        if cls is not None:
            inner = cls.DESCRIPTOR
            valuePath = _join(path, "value")
            if inner.full_name in _SPECIAL_JSON:
                raise self.parseError(
                    _join(path, "type_url"), "message " + desc.full_name,
                    "a TypedStruct cannot hold the well-known type %s" % (inner.full_name,))
            given = value.get("value")
            if given is not None and not isinstance(given, dict):
                # Not a struct: the walk of the TypedStruct itself said so.
                return out
            walked = attempt(self.message, inner, given or {}, valuePath)
            if walked is not FAILED:
                out["value"] = walked
        return out

    def duration(self, desc, value, path):
        what = "message google.protobuf.Duration"
        if isinstance(value, dict):
            # The object form {seconds, nanos} is accepted by Envoy too.
            extra = [k for k in value if k not in ("seconds", "nanos")]
            if extra:
                raise self.unknownError(path, what, "no such field: '%s'" % (_keyText(extra[0]),))
            seconds = self.integer(
                value.get("seconds") or 0, _join(path, "seconds"), "int64", -2 ** 63, 2 ** 63 - 1)
            nanos = self.integer(
                value.get("nanos") or 0, _join(path, "nanos"), "int32", -2 ** 31, 2 ** 31 - 1)
            if not -999999999 <= nanos <= 999999999 or (seconds and nanos and
                                                       (seconds < 0) != (nanos < 0)):
                raise self.parseError(path, what, "invalid duration nanos")
            total = seconds * 10 ** 9 + nanos
        elif isinstance(value, str):
            if not value.endswith("s") or value.endswith("ss"):
                raise self.parseError(path, what, "duration must end with a single 's'")
            match = _DURATION_RE.match(value[:-1])
            if match is None:
                if not value[:1].isdigit() and value[:1] != "-":
                    raise self.parseError(path, what, "duration must start with an integer")
                raise self.parseError(path, what, "invalid duration '%s'" % (value,))
            sign, whole, frac = match.groups()
            total = int(whole) * 10 ** 9 + int((frac or "").ljust(9, "0") or 0)
            if sign:
                total = -total
        else:
            raise self.parseError(path, what, self.unexpected(value, '"'))
        seconds, nanos = divmod(abs(total), 10 ** 9)
        if seconds > _MAX_DURATION_SECONDS:
            raise self.parseError(path, what, "duration out of range")
        return "%s%d.%09ds" % ("-" if total < 0 else "", seconds, nanos)

    def stringForm(self, desc, value, path):
        # Timestamp and FieldMask: protobuf checks the text itself.
        if isinstance(value, str):
            return value
        raise self.parseError(path, "message " + desc.full_name, self.unexpected(value, '"'))

    def wrapper(self, desc, value, path):
        inner = desc.fields_by_name["value"]
        if isinstance(value, dict) and set(value) <= {"value"}:
            # The object form {value: x} is accepted by Envoy too; {} is the
            # default value.
            value = value.get("value", _defaultJson(inner))
        if value is None:
            raise self.parseError(path, "message " + desc.full_name, "null is not a value")
        return self.scalar(inner, value, path, "message " + desc.full_name)

    def struct(self, desc, value, path):
        if not isinstance(value, dict):
            raise self.parseError(
                path, "message google.protobuf.Struct", self.unexpected(value, "{"))
        return self.json(value, path)

    def listValue(self, desc, value, path):
        if not isinstance(value, list):
            raise self.parseError(
                path, "message google.protobuf.ListValue", self.unexpected(value, "["))
        return self.json(value, path)

    def value(self, desc, value, path):
        return self.json(value, path)

    def json(self, value, path):
        """Any JSON value (C{Struct}, C{Value}): keys become strings."""
        if isinstance(value, dict):
            return {_keyText(k): self.json(v, "%s[%s]" % (path, _keyText(k)))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v, "%s[%d]" % (path, i)) for i, v in enumerate(value)]
        if value is None or isinstance(value, (str, bool, int)):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.parseError(path, "message google.protobuf.Value",
                                      "invalid number: '%s'" % (value,))
            return value
        return str(value)


def _typeFromPlugins(typeName):
    """
    Whether C{typeName} is known once the installed plugins are loaded: a
    third-party extension may bring its own protobuf message.
    """
    from txenvoy.config import protos, registry

    if registry.isEnvoyType(typeName):
        return False
    registry.isRegisteredType(typeName)
    return protos.importTypeName(typeName)


_SPECIAL_HANDLERS = {
    "google.protobuf.Any": _Walk.any,
    "google.protobuf.Duration": _Walk.duration,
    "google.protobuf.Timestamp": _Walk.stringForm,
    "google.protobuf.FieldMask": _Walk.stringForm,
    "google.protobuf.Struct": _Walk.struct,
    "google.protobuf.ListValue": _Walk.listValue,
    "google.protobuf.Value": _Walk.value,
}
for _name in _WRAPPERS:
    _SPECIAL_HANDLERS[_name] = _Walk.wrapper


def _flatten(items):
    """
    Envoy's parser splices a list nested in a repeated field into it
    (C{[[a], b, []]} reads as C{[a, b]}).
    """
    if not any(isinstance(item, list) for item in items):
        return items
    flat = []
    stack = [iter(items)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _defaultJson(fd):
    """The JSON form of a scalar field's default value."""
    if fd.enum_type is not None:
        return fd.enum_type.values[0].number
    if fd.type in (fd.TYPE_STRING, fd.TYPE_BYTES):
        return ""
    if fd.type == fd.TYPE_BOOL:
        return False
    return 0


def _join(path, name):
    return "%s.%s" % (path, name) if path else name


def _keyText(key):
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


def _jsonText(value):
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def _scalarText(value):
    if isinstance(value, str):
        return value
    return _jsonText(value)


def _fieldMap(desc):
    """Field name and JSON name -> field, cached per message type."""
    try:
        return _fieldMaps[desc.full_name]
    except KeyError:
        pass
    fields = {}
    for fd in desc.fields:
        fields[fd.name] = fd
        fields.setdefault(fd.json_name, fd)
    _fieldMaps[desc.full_name] = fields
    return fields


def _keepsNull(fd):
    # A google.protobuf.Value field holds JSON null as a value of its own.
    return (fd.message_type is not None and not fd.is_repeated
            and fd.message_type.full_name == "google.protobuf.Value")


_SCALAR_NAMES = {
    1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64",
    7: "fixed32", 8: "bool", 9: "string", 12: "bytes", 13: "uint32",
    15: "sfixed32", 16: "sfixed64", 17: "sint32", 18: "sint64",
}


def _scalarName(fd):
    return _SCALAR_NAMES.get(fd.type, "value")


def _intRange(fd):
    t = fd.type
    if t in (5, 15, 17):  # int32, sfixed32, sint32
        return -2 ** 31, 2 ** 31 - 1
    if t in (13, 7):  # uint32, fixed32
        return 0, 2 ** 32 - 1
    if t in (4, 6):  # uint64, fixed64
        return 0, 2 ** 64 - 1
    return -2 ** 63, 2 ** 63 - 1


def _translateParseError(error, rootName):
    """
    Turn a residual C{json_format.ParseError} into Envoy's phrasing, keeping
    the field path protobuf reports.
    """
    text = " ".join(str(error).split())
    shortName = rootName.rsplit(".", 1)[-1]
    path = ""
    match = re.search(r'\bat "?%s\.?([^"\s]*)"?\.*$' % (re.escape(shortName),), text)
    if match:
        path = match.group(1).rstrip(".")
        text = text[:match.start()].rstrip()
    else:
        names = re.findall(r"Failed to parse (\S+) field: ", text)
        path = ".".join(names)
    detail = re.sub(r"^(?:Failed to parse \S+ field: )+", "", text).rstrip(". ")
    return ConfigError(
        "Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in %s%s: %s)"
        % (rootName, " @ %s" % (path,) if path else "", detail or type(error).__name__))


def parseDict(data, message, unknownFields=None):
    """
    Fill C{message} from plain data (parsed YAML or JSON) the way Envoy
    parses a config: Envoy's leniencies are applied, every C{@type} is
    imported, and mistakes become L{ConfigError}s naming the field path.

    @param data: a C{dict}.
    @param message: an empty message instance of the root type.
    @param unknownFields: C{--allow-unknown-static-fields}: a list to which
        the warnings for unknown fields (dropped, not errors) are appended,
        as one list per document that has any.
    @return: C{message}.
    @raise ConfigError: for anything the data gets wrong.
    """
    from google.protobuf import json_format

    rootName = message.DESCRIPTOR.full_name
    walk = _Walk(rootName, None if unknownFields is None else [])
    if not isinstance(data, dict):
        raise ConfigError(
            "Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in %s: "
            "unexpected character: '%s'; expected '{'): the top level of the config "
            "must be a mapping of %s fields, not %s"
            % (rootName, _jsonText(data)[:1], rootName.rsplit(".", 1)[-1], _kindName(data)))
    try:
        # Every mistake of the walk is reported before any is raised.
        with collectErrors():
            normalized = walk.message(message.DESCRIPTOR, data, "")
    except RecursionError:
        raise ConfigError(
            "Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in %s: "
            "the config nests too deeply)" % (rootName,))
    if walk.unknown:
        unknownFields.append(walk.unknown)
    try:
        json_format.ParseDict(normalized, message, ignore_unknown_fields=False)
    except RecursionError:
        raise ConfigError(
            "Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in %s: "
            "the config nests too deeply)" % (rootName,))
    except Exception as e:
        raise _translateParseError(e, rootName)
    return message


def _kindName(value):
    if value is None:
        return "an empty document"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


# --- files -------------------------------------------------------------------

def _readText(path):
    if not os.path.isfile(path):
        raise ConfigError("Invalid path: %s" % (path,))
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError("Invalid path: %s (%s)" % (path, e.strerror or e))
    return raw


def _decode(raw, path):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("%s: the file is not UTF-8 text (byte %d)" % (path, e.start))


def _importTextTypes(text):
    from txenvoy.config import protos

    for url in re.findall(r"\[\s*([A-Za-z0-9_.\-]+/[A-Za-z0-9_.]+)\s*\]", text):
        protos.importTypeName(url)


def _loadFile(path, message, unknownFields=None):
    """Fill C{message} from a file, choosing the format by its extension."""
    raw = _readText(path)
    lower = path.lower()
    rootName = message.DESCRIPTOR.full_name
    if lower.endswith(".pb"):
        try:
            message.ParseFromString(raw)
        except Exception as e:
            raise ConfigError("Unable to parse file '%s' as a binary %s: %s"
                              % (path, rootName, " ".join(str(e).split())))
        return message
    text = _decode(raw, path)
    if lower.endswith(".pb_text"):
        from google.protobuf import text_format

        _importTextTypes(text)
        try:
            text_format.Parse(text, message)
        except Exception as e:
            raise ConfigError("Unable to parse file '%s' as a text %s: %s"
                              % (path, rootName, " ".join(str(e).split())))
        return message
    if lower.endswith((".yaml", ".yml")):
        data, lines = parseYamlWithLines(text)
        setSource(lines)
        if data is None:
            raise ConfigError("Unable to convert YAML as JSON: the file '%s' is empty" % (path,))
        return parseDict(data, message, unknownFields)
    try:
        data = _parseJson(text, rootName)
        if not isinstance(data, dict):
            parseDict(data, message)
    except ConfigError as e:
        if lower.endswith(".json"):
            raise
        raise ConfigError(
            "%s (a config file whose name does not end in .yaml or .yml is read as "
            "JSON, as Envoy does)" % (e.message,))
    return parseDict(data, message, unknownFields)


def readConfigFile(path):
    """
    Read a YAML (C{.yaml}, C{.yml}) or JSON (anything else) file as plain
    data, as Envoy reads LDS/CDS files and bootstraps.

    @raise ConfigError: missing file or a syntax error.
    """
    text = _decode(_readText(path), path)
    if path.lower().endswith((".yaml", ".yml")):
        return parseYaml(text)
    return _parseJson(text, "file '%s'" % (path,))


# --- the entry point ---------------------------------------------------------

def loadBootstrap(configPath=None, configYaml=None, serviceNode="", serviceCluster="",
                  unknownFields=None, serviceZone=""):
    """
    Load, validate and cross-check a bootstrap as C{envoy -c configPath
    --config-yaml configYaml --service-node ... --service-cluster ...} does.

    @param configPath: the bootstrap file, relative to the working directory.
    @param configYaml: inline YAML merged over the file (repeated fields
        appended, scalars replaced); may be given alone.
    @param serviceNode: fills C{node.id} when the bootstrap leaves it empty.
    @param serviceCluster: fills C{node.cluster} when the bootstrap leaves it
        empty.
    @param unknownFields: C{--allow-unknown-static-fields}: see L{parseDict}.
    @param serviceZone: fills C{node.locality.zone} when the bootstrap leaves
        it empty.
    @return: an C{envoy.config.bootstrap.v3.Bootstrap}.
    @raise ConfigError: for any mistake, with a one-line message.
    """
    from envoy.config.bootstrap.v3 import bootstrap_pb2

    if not configPath and not configYaml:
        raise ConfigError(NO_CONFIG)
    bootstrap = bootstrap_pb2.Bootstrap()
    # Every mistake of one phase (parsing, then building) is reported at
    # once, each with its line in the file.
    with collectErrors():
        _loadInto(bootstrap, configPath, configYaml, serviceNode, serviceCluster, unknownFields,
                  serviceZone)
    return bootstrap


def _loadInto(bootstrap, configPath, configYaml, serviceNode, serviceCluster, unknownFields,
              serviceZone):
    """Fill C{bootstrap} as L{loadBootstrap} describes."""
    from envoy.config.bootstrap.v3 import bootstrap_pb2

    from txenvoy.config import checks, validation

    try:
        if configPath:
            _loadFile(os.fspath(configPath), bootstrap, unknownFields)
        if configYaml:
            override = bootstrap_pb2.Bootstrap()
            data, lines = parseYamlWithLines(configYaml)
            if not configPath:
                setSource(lines)
            if data is None:
                raise ConfigError("Unable to convert YAML as JSON: --config-yaml is empty")
            parseDict(data, override, unknownFields)
            bootstrap.MergeFrom(override)
        if serviceNode and not bootstrap.node.id:
            bootstrap.node.id = serviceNode
        if serviceCluster and not bootstrap.node.cluster:
            bootstrap.node.cluster = serviceCluster
        if serviceZone and not bootstrap.node.locality.zone:
            bootstrap.node.locality.zone = serviceZone
        validation.validate(bootstrap)
        checks.check(bootstrap, serviceNode, serviceCluster)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError("the config nests too deeply")
    except Exception as e:
        # A user's config must never produce a traceback.
        raise ConfigError("invalid config: %s: %s" % (
            type(e).__name__, " ".join(str(e).split())))
