# -*- test-case-name: tests.config.test_validation -*-
"""
Check the protoc-gen-validate rules that Envoy's protos carry.

Envoy runs the C++ validators that protoc-gen-validate (PGV) generates from
the C{(validate.rules)} field options, C{(validate.required)} oneof options
and C{(validate.disabled)} message options of its API. The Python modules
of xds-protos carry the same options but no validators, so this module reads
the options from the descriptors and checks them generically. The rules of
each message type are compiled once and cached.

Envoy stops at the first violation; here the first violation of each field
stops that field only, and all are raised together, the first one first
(L{txenvoy.config.errors.collectErrors}). Each message keeps Envoy's key
phrase, C{<Message>ValidationError.<Field>: <reason>}, and adds the
field path::

    Proto constraint validation failed (ClusterValidationError.Name: value
    length must be at least 1 characters) @ static_resources.clusters[0].name

PGV itself does not look inside C{google.protobuf.Any}; Envoy validates each
C{typed_config} when it builds the extension. Here the C{Any} values are
unpacked and checked in the same walk, so a whole config is checked before
anything is built. Envoy's own check that every duration is non-negative
(C{MessageUtil::validateDurationFields}) runs in the same walk.
"""

import ipaddress
import re
import time
import urllib.parse

from txenvoy.config.errors import ConfigError, collectErrors, report, skipOnError
from txenvoy.config.fields import mapEntry
from txenvoy.regex import compilePattern

_MAX_DURATION_SECONDS = 315576000000
_NANOS = 10 ** 9

# Regular expressions of PGV's well_known_regex rule.
# protoc-gen-validate's well-known header patterns, matched with RE2 as its
# C++ validators do (RE2's "$" is the end of the text: no final newline).
_HEADER_NAME_RE = compilePattern(r"^:?[0-9a-zA-Z!#$%&'*+-.^_|~\x60]+$")
_HEADER_VALUE_RE = compilePattern(r"^[^\x00-\x08\x0A-\x1F\x7F]*$")
_HEADER_STRING_RE = compilePattern(r"^[^\x00\n\r]*$")
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

_validate_pb2 = None


def _rulesModule():
    global _validate_pb2
    if _validate_pb2 is None:
        from validate import validate_pb2

        _validate_pb2 = validate_pb2
    return _validate_pb2


def validate(message, path=""):
    """
    Check C{message} and everything in it against its PGV rules.

    @param message: any protobuf message, typically a C{Bootstrap}.
    @param path: the field path of C{message} itself, prefixed to the path
        in error messages.
    @raise ConfigError: the rules that do not hold, the first one first
        (one violation a field: the first).
    """
    with collectErrors():
        _validateMessage(message, path)


def _camel(name):
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _join(path, name):
    return "%s.%s" % (path, name) if path else name


def _violation(desc, label, reason, path):
    return ConfigError(
        "Proto constraint validation failed (%sValidationError.%s: %s) @ %s"
        % (desc.name, label, reason, path or "(root)"))


def _quote(text):
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return '"%s"' % (text.replace("\\", "\\\\").replace('"', '\\"'),)


def _fmtNumber(value):
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fmtDuration(nanos):
    sign = "-" if nanos < 0 else ""
    seconds, frac = divmod(abs(nanos), _NANOS)
    if frac:
        return "%s%d.%ss" % (sign, seconds, ("%09d" % frac).rstrip("0"))
    return "%s%ds" % (sign, seconds)


def _nanos(duration):
    return duration.seconds * _NANOS + duration.nanos


# --- compiled checks: each takes a value and returns a reason or None --------

def _check(predicate, reason):
    """A check that fails with C{reason} when C{predicate(value)} is false."""
    return lambda v: None if predicate(v) else reason

def _rangeCheck(rules, fmt, key=lambda v: v):
    """
    PGV's const/lt/lte/gt/gte/in/not_in, shared by numbers, durations and
    timestamps; C{key} turns a rule value into something comparable.
    """
    checks = []
    has = rules.HasField
    if has("const"):
        const = key(rules.const)
        checks.append(_check(lambda v, c=const: v == c, "value must equal %s" % fmt(const)))
    low = high = None
    lowIncl = highIncl = False
    if has("gt"):
        low = key(rules.gt)
    elif has("gte"):
        low, lowIncl = key(rules.gte), True
    if has("lt"):
        high = key(rules.lt)
    elif has("lte"):
        high, highIncl = key(rules.lte), True
    aboveLow = (lambda v: v >= low) if lowIncl else (lambda v: v > low)
    belowHigh = (lambda v: v <= high) if highIncl else (lambda v: v < high)
    if low is not None and high is not None:
        # PGV: with lt below gt the range is the outside one.
        if high > low:
            reason = "value must be inside range %s%s, %s%s" % (
                "[" if lowIncl else "(", fmt(low), fmt(high), "]" if highIncl else ")")
            checks.append(_check(lambda v: aboveLow(v) and belowHigh(v), reason))
        else:
            reason = "value must be outside range %s%s, %s%s" % (
                "(" if highIncl else "[", fmt(high), fmt(low), ")" if lowIncl else "]")
            checks.append(_check(lambda v: aboveLow(v) or belowHigh(v), reason))
    elif low is not None:
        checks.append(_check(aboveLow, "value must be greater than %s%s" % (
            "or equal to " if lowIncl else "", fmt(low))))
    elif high is not None:
        checks.append(_check(belowHigh, "value must be less than %s%s" % (
            "or equal to " if highIncl else "", fmt(high))))
    inList = [key(v) for v in getattr(rules, "in", ())]
    if inList:
        reason = "value must be in list [%s]" % ", ".join(fmt(v) for v in inList)
        allowed = frozenset(inList)
        checks.append(_check(lambda v, a=allowed: v in a, reason))
    notIn = [key(v) for v in getattr(rules, "not_in", ())]
    if notIn:
        reason = "value must not be in list [%s]" % ", ".join(fmt(v) for v in notIn)
        banned = frozenset(notIn)
        checks.append(_check(lambda v, b=banned: v not in b, reason))
    return checks


def _run(checks, ignoreEmpty=False, isEmpty=lambda v: not v):
    """One function running C{checks} in order; C{None} if there are none."""
    if not checks:
        return None
    if len(checks) == 1 and not ignoreEmpty:
        return checks[0]

    def check(value):
        if ignoreEmpty and isEmpty(value):
            return None
        for c in checks:
            reason = c(value)
            if reason is not None:
                return reason
        return None

    return check


def _compileNumber(rules):
    checks = _rangeCheck(rules, _fmtNumber)
    ignoreEmpty = "ignore_empty" in rules.DESCRIPTOR.fields_by_name and rules.ignore_empty
    return _run(checks, ignoreEmpty, lambda v: v == 0)


def _compileBool(rules):
    if not rules.HasField("const"):
        return None
    const = rules.const
    reason = "value must equal %s" % ("true" if const else "false")
    return lambda v: None if v == const else reason


def _isHostname(text):
    if text.endswith("."):
        text = text[:-1]
    if not text or len(text) > 253:
        return False
    return all(_HOST_LABEL_RE.match(label) for label in text.split("."))


def _isIp(text, version=None):
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version


def _isEmail(text):
    if "<" in text and text.endswith(">"):
        text = text[text.index("<") + 1:-1]
    local, at, host = text.rpartition("@")
    return bool(at and local and len(local) <= 64 and len(text) <= 254 and _isHostname(host))


def _isUri(text):
    try:
        parts = urllib.parse.urlparse(text)
    except ValueError:
        return False
    return bool(parts.scheme) and not any(c.isspace() for c in text)


def _isUriRef(text):
    try:
        urllib.parse.urlparse(text)
    except ValueError:
        return False
    return not any(c.isspace() for c in text)


def _compileString(rules, isBytes=False):
    has = rules.HasField
    size = len
    nbytes = (lambda v: len(v.encode("utf-8"))) if not isBytes else (lambda v: len(v))
    unit = "bytes" if isBytes else "characters"
    checks = []

    def add(predicate, reason):
        checks.append(_check(predicate, reason))

    if has("const"):
        const = rules.const
        add(lambda v, c=const: v == c, "value must equal %s" % _quote(const))
    if has("len"):
        n = rules.len
        add(lambda v, n=n: size(v) == n, "value length must be %d %s" % (n, unit))
    if has("min_len"):
        n = rules.min_len
        add(lambda v, n=n: size(v) >= n, "value length must be at least %d %s" % (n, unit))
    if has("max_len"):
        n = rules.max_len
        add(lambda v, n=n: size(v) <= n, "value length must be at most %d %s" % (n, unit))
    if not isBytes:
        if has("len_bytes"):
            n = rules.len_bytes
            add(lambda v, n=n: nbytes(v) == n, "value length must be %d bytes" % n)
        if has("min_bytes"):
            n = rules.min_bytes
            add(lambda v, n=n: nbytes(v) >= n, "value length must be at least %d bytes" % n)
        if has("max_bytes"):
            n = rules.max_bytes
            add(lambda v, n=n: nbytes(v) <= n, "value length must be at most %d bytes" % n)
    if has("pattern"):
        # protoc-gen-validate's C++ rules match with RE2 (PartialMatch).
        regexp = compilePattern(rules.pattern)
        add(regexp.search, "value does not match regex pattern %s" % _quote(rules.pattern))
    if has("prefix"):
        prefix = rules.prefix
        add(lambda v, p=prefix: v.startswith(p), "value does not have prefix %s" % _quote(prefix))
    if has("suffix"):
        suffix = rules.suffix
        add(lambda v, p=suffix: v.endswith(p), "value does not have suffix %s" % _quote(suffix))
    if has("contains"):
        part = rules.contains
        add(lambda v, p=part: p in v, "value does not contain substring %s" % _quote(part))
    if not isBytes and has("not_contains"):
        part = rules.not_contains
        add(lambda v, p=part: p not in v, "value contains substring %s" % _quote(part))
    inList = list(getattr(rules, "in"))
    if inList:
        allowed = frozenset(inList)
        add(lambda v, a=allowed: v in a,
            "value must be in list [%s]" % ", ".join(_quote(x) for x in inList))
    notIn = list(rules.not_in)
    if notIn:
        banned = frozenset(notIn)
        add(lambda v, b=banned: v not in b,
            "value must not be in list [%s]" % ", ".join(_quote(x) for x in notIn))
    wellKnown = rules.WhichOneof("well_known")
    if wellKnown is not None and getattr(rules, wellKnown) not in (False, 0):
        if isBytes:
            lengths = {"ip": (4, 16), "ipv4": (4,), "ipv6": (16,)}.get(wellKnown)
            if lengths:
                add(lambda v, n=lengths: len(v) in n,
                    "value must be a valid %s address" % {
                        "ip": "IP", "ipv4": "IPv4", "ipv6": "IPv6"}[wellKnown])
        elif wellKnown == "well_known_regex":
            strict = rules.strict if has("strict") else True
            kind = rules.well_known_regex
            if not strict:
                regexp = _HEADER_STRING_RE
            elif kind == _rulesModule().HTTP_HEADER_NAME:
                regexp = _HEADER_NAME_RE
            elif kind == _rulesModule().HTTP_HEADER_VALUE:
                regexp = _HEADER_VALUE_RE
            else:
                regexp = None
            if regexp is not None:
                # Printed as Envoy prints it: the escapes as written.
                add(regexp.search, 'value does not match regex pattern "%s"' % (regexp.pattern,))
        else:
            predicate, what = {
                "email": (_isEmail, "email address"),
                "hostname": (_isHostname, "hostname"),
                "ip": (_isIp, "IP address"),
                "ipv4": (lambda v: _isIp(v, 4), "IPv4 address"),
                "ipv6": (lambda v: _isIp(v, 6), "IPv6 address"),
                "uri": (_isUri, "URI"),
                "uri_ref": (_isUriRef, "URI"),
                "address": (lambda v: _isHostname(v) or _isIp(v), "hostname, or ip address"),
                "uuid": (lambda v: _UUID_RE.match(v) is not None, "UUID"),
            }[wellKnown]
            add(predicate, "value must be a valid %s" % what)
    ignoreEmpty = has("ignore_empty") and rules.ignore_empty
    return _run(checks, ignoreEmpty)


def _compileEnum(rules, enumDesc):
    checks = []
    if rules.HasField("const"):
        const = rules.const
        checks.append(_check(lambda v, c=const: v == c, "value must equal %d" % const))
    if rules.defined_only:
        defined = frozenset(enumDesc.values_by_number)
        checks.append(_check(lambda v, d=defined: v in d,
                             "value must be one of the defined enum values"))
    inList = list(getattr(rules, "in"))
    if inList:
        allowed = frozenset(inList)
        reason = "value must be in list [%s]" % ", ".join(str(x) for x in inList)
        checks.append(_check(lambda v, a=allowed: v in a, reason))
    notIn = list(rules.not_in)
    if notIn:
        banned = frozenset(notIn)
        reason = "value must not be in list [%s]" % ", ".join(str(x) for x in notIn)
        checks.append(_check(lambda v, b=banned: v not in b, reason))
    return _run(checks)


def _compileDuration(rules):
    """Checks on a set C{Duration} (its C{required} is handled apart)."""
    checks = _rangeCheck(rules, _fmtDuration, _nanos)
    run = _run(checks)
    if run is None:
        return None
    return lambda d: run(_nanos(d))


def _compileTimestamp(rules):
    checks = _rangeCheck(rules, _fmtDuration, _nanos)
    has = rules.HasField
    if has("lt_now") and rules.lt_now:
        checks.append(lambda v: None if v < time.time_ns() else "value must be less than now")
    if has("gt_now") and rules.gt_now:
        checks.append(lambda v: None if v > time.time_ns() else "value must be greater than now")
    if has("within"):
        within = _nanos(rules.within)
        reason = "value must be within %s of now" % _fmtDuration(within)
        checks.append(_check(lambda v, w=within: abs(v - time.time_ns()) <= w, reason))
    run = _run(checks)
    if run is None:
        return None
    return lambda t: run(_nanos(t))


def _compileAny(rules):
    checks = []
    inList = list(getattr(rules, "in"))
    if inList:
        allowed = frozenset(inList)
        reason = "type URL must be in list [%s]" % ", ".join(inList)
        checks.append(_check(lambda a, t=allowed: a.type_url in t, reason))
    notIn = list(rules.not_in)
    if notIn:
        banned = frozenset(notIn)
        reason = "type URL must not be in list [%s]" % ", ".join(notIn)
        checks.append(_check(lambda a, t=banned: a.type_url not in t, reason))
    return _run(checks)


_NUMBER_RULES = frozenset((
    "float", "double", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
    "fixed32", "fixed64", "sfixed32", "sfixed64"))
_WRAPPERS = frozenset(
    "google.protobuf." + n for n in (
        "DoubleValue", "FloatValue", "Int64Value", "UInt64Value", "Int32Value",
        "UInt32Value", "BoolValue", "StringValue", "BytesValue"))


class _ValueRules:
    """
    The compiled rules for one value (a singular field, or one element of a
    repeated or map field).

    @ivar check: C{value -> reason or None} for a present value, or C{None}.
    @ivar required: the value must be set (message, duration, any, timestamp).
    @ivar requiredReason: PGV's words when a required value is missing.
    @ivar skip: do not look inside the message (C{message.skip}).
    """

    def __init__(self, fieldRules, fd):
        self.check = None
        self.required = False
        self.skip = False
        self.unwrap = False
        messageType = fd.message_type
        # PGV words a missing wrapper differently from other messages.
        if messageType is not None and messageType.full_name in _WRAPPERS:
            self.requiredReason = "value is required and must not be nil."
        else:
            self.requiredReason = "value is required"
        if fieldRules is None:
            return
        if fieldRules.HasField("message"):
            self.required = fieldRules.message.required
            self.skip = fieldRules.message.skip
        kind = fieldRules.WhichOneof("type")
        if kind is None:
            return
        rules = getattr(fieldRules, kind)
        if kind in _NUMBER_RULES:
            self.check = _compileNumber(rules)
        elif kind == "bool":
            self.check = _compileBool(rules)
        elif kind == "string":
            self.check = _compileString(rules)
        elif kind == "bytes":
            self.check = _compileString(rules, isBytes=True)
        elif kind == "enum" and fd.enum_type is not None:
            self.check = _compileEnum(rules, fd.enum_type)
        elif kind == "duration":
            self.required = self.required or rules.required
            self.check = _compileDuration(rules)
        elif kind == "timestamp":
            self.required = self.required or rules.required
            self.check = _compileTimestamp(rules)
        elif kind == "any":
            self.required = self.required or rules.required
            self.check = _compileAny(rules)
        if (messageType is not None and messageType.full_name in _WRAPPERS
                and kind in _NUMBER_RULES | {"bool", "string", "bytes"}):
            # PGV applies scalar rules to a wrapper's value when it is set.
            self.unwrap = True


class _FieldPlan:
    """What to do with one field of a message type."""

    def __init__(self, fd, fieldRules, itemRules, keyRules, valueRules, containerCheck):
        self.fd = fd
        self.name = fd.name
        self.label = _camel(fd.name)
        self.value = _ValueRules(fieldRules, fd) if itemRules is None else None
        self.items = itemRules
        self.keys = keyRules
        self.values = valueRules
        self.container = containerCheck
        oneof = fd.containing_oneof
        # A synthetic oneof (proto3 `optional`) behaves like presence.
        self.inOneof = oneof is not None and not _isSynthetic(oneof)
        self.hasPresence = fd.has_presence
        self.messageType = fd.message_type


def _isSynthetic(oneof):
    synthetic = getattr(oneof, "is_synthetic", None)
    if synthetic is not None:
        return synthetic() if callable(synthetic) else synthetic
    # protoc names the oneof of a proto3 `optional` field "_<field>".
    return len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name


class _MessagePlan:
    """The compiled checks for one message type."""

    def __init__(self, desc):
        self.desc = desc
        self.fields = []
        self.requiredOneofs = []


_plans = {}


def _fieldRules(fd):
    if not fd.has_options:
        return None
    options = fd.GetOptions()
    ext = _rulesModule().rules
    if not options.HasExtension(ext):
        return None
    return options.Extensions[ext]


def _messageDisabled(desc):
    if not desc.has_options:
        return False
    options = desc.GetOptions()
    module = _rulesModule()
    for ext in (module.disabled, module.ignored):
        if options.HasExtension(ext) and options.Extensions[ext]:
            return True
    return False


def _plan(desc):
    """The cached L{_MessagePlan} for a message type (C{None}: nothing to do)."""
    name = desc.full_name
    try:
        return _plans[name]
    except KeyError:
        pass
    if _messageDisabled(desc):
        _plans[name] = None
        return None
    plan = _MessagePlan(desc)
    requiredExt = _rulesModule().required
    for oneof in desc.oneofs:
        if _isSynthetic(oneof) or not oneof.has_options:
            continue
        options = oneof.GetOptions()
        if options.HasExtension(requiredExt) and options.Extensions[requiredExt]:
            plan.requiredOneofs.append(oneof.name)
    for fd in desc.fields:
        fieldPlan = _planField(fd)
        if fieldPlan is not None:
            plan.fields.append(fieldPlan)
    # Stored only when complete: a failure leaves nothing half-built behind.
    _plans[name] = plan
    return plan


def _elementInteresting(fd, rules):
    if rules is not None and (rules.check is not None or rules.required):
        return True
    if fd.message_type is None:
        return False
    name = fd.message_type.full_name
    if name in ("google.protobuf.Duration", "google.protobuf.Any"):
        return True
    if rules is not None and rules.skip:
        return False
    # The other well-known types carry no rules. Any other message is
    # looked inside when set; its own plan is built the first time one is
    # met, so only the types a config uses are ever compiled.
    return not name.startswith("google.protobuf.")


def _planField(fd):
    fieldRules = _fieldRules(fd)
    entry = mapEntry(fd)
    if entry is not None:
        keyFd = entry.fields_by_name["key"]
        valueFd = entry.fields_by_name["value"]
        keyRules = valueRules = None
        checks = []
        if fieldRules is not None and fieldRules.WhichOneof("type") == "map":
            mapRules = fieldRules.map
            checks.extend(_countChecks(mapRules, "min_pairs", "max_pairs", "pair(s)"))
            if mapRules.HasField("keys"):
                keyRules = _ValueRules(mapRules.keys, keyFd)
            if mapRules.HasField("values"):
                valueRules = _ValueRules(mapRules.values, valueFd)
            container = _run(checks, mapRules.ignore_empty)
        else:
            container = None
        if valueRules is None:
            valueRules = _ValueRules(None, valueFd)
        interesting = (container is not None
                       or (keyRules is not None and keyRules.check is not None)
                       or _elementInteresting(valueFd, valueRules))
        if not interesting:
            return None
        plan = _FieldPlan(fd, None, valueRules, keyRules, valueRules, container)
        plan.valueFd = valueFd
        return plan
    if fd.is_repeated:
        itemRules = None
        checks = []
        if fieldRules is not None and fieldRules.WhichOneof("type") == "repeated":
            repeated = fieldRules.repeated
            checks.extend(_countChecks(repeated, "min_items", "max_items", "item(s)"))
            if repeated.unique:
                checks.append(_uniqueCheck)
            if repeated.HasField("items"):
                itemRules = _ValueRules(repeated.items, fd)
            container = _run(checks, repeated.ignore_empty)
        else:
            container = None
        if itemRules is None:
            itemRules = _ValueRules(None, fd)
        if container is None and not _elementInteresting(fd, itemRules):
            return None
        return _FieldPlan(fd, None, itemRules, None, None, container)
    plan = _FieldPlan(fd, fieldRules, None, None, None, None)
    if not _elementInteresting(fd, plan.value):
        return None
    return plan


def _countChecks(rules, minField, maxField, noun):
    """PGV's bounds on how many pairs a map or items a list holds."""
    checks = []
    if rules.HasField(minField):
        n = getattr(rules, minField)
        checks.append(_check(lambda v, n=n: len(v) >= n,
                             "value must contain at least %d %s" % (n, noun)))
    if rules.HasField(maxField):
        n = getattr(rules, maxField)
        checks.append(_check(lambda v, n=n: len(v) <= n,
                             "value must contain no more than %d %s" % (n, noun)))
    return checks


def _uniqueCheck(values):
    seen = set()
    for v in values:
        key = v.SerializeToString(deterministic=True) if hasattr(v, "SerializeToString") else v
        if key in seen:
            return "repeated value must contain unique items"
        seen.add(key)
    return None


# --- the walk ----------------------------------------------------------------

def _validateMessage(message, path):
    desc = message.DESCRIPTOR
    if desc.full_name == "google.protobuf.Any":
        _validateAny(message, path)
        return
    plan = _plan(desc)
    if plan is None:
        return
    for fieldPlan in plan.fields:
        # Inside a collection of errors a field's violation is reported and
        # the next field checked.
        with skipOnError():
            _validateField(message, desc, plan, fieldPlan, path)
    for oneofName in plan.requiredOneofs:
        if message.WhichOneof(oneofName) is None:
            # Envoy's wording for a required oneof differs from the fields'.
            report(ConfigError(
                'Proto constraint validation failed (field: "%s", reason: is required) @ %s'
                % (oneofName, _join(path, oneofName))))


def _validateField(message, desc, plan, fieldPlan, path):
    name = fieldPlan.name
    if fieldPlan.items is not None:
        if mapEntry(fieldPlan.fd) is not None:
            _validateMap(message, plan, fieldPlan, path)
        else:
            _validateRepeated(message, plan, fieldPlan, path)
        return
    if fieldPlan.hasPresence and not message.HasField(name):
        if fieldPlan.value.required and not fieldPlan.inOneof:
            raise _violation(desc, fieldPlan.label, fieldPlan.value.requiredReason,
                             _join(path, name))
        return
    _validateValue(desc, fieldPlan.fd, fieldPlan.value, getattr(message, name),
                   fieldPlan.label, _join(path, name))


def _validateValue(desc, fd, rules, value, label, path):
    """Check one present value (a field or an element) and look inside it."""
    messageType = fd.message_type
    name = messageType.full_name if messageType is not None else None
    if name == "google.protobuf.Duration":
        # Envoy rejects a negative duration while parsing, before any rule.
        _checkDuration(value, path)
    if rules.check is not None:
        reason = rules.check(value.value if rules.unwrap else value)
        if reason is not None:
            raise _violation(desc, label, reason, path)
    if messageType is None or rules.skip:
        return
    if name == "google.protobuf.Any":
        _validateAny(value, path)
    elif not name.startswith("google.protobuf."):
        _validateMessage(value, path)


def _containerValues(message, plan, fieldPlan, path):
    """A list or map field's values and path, once its own rules hold."""
    values = getattr(message, fieldPlan.name)
    fieldPath = _join(path, fieldPlan.name)
    if fieldPlan.container is not None:
        reason = fieldPlan.container(values)
        if reason is not None:
            raise _violation(plan.desc, fieldPlan.label, reason, fieldPath)
    return values, fieldPath


def _validateRepeated(message, plan, fieldPlan, path):
    values, fieldPath = _containerValues(message, plan, fieldPlan, path)
    rules = fieldPlan.items
    if rules.check is None and fieldPlan.messageType is None:
        return
    for i, value in enumerate(values):
        # Each item is checked, whatever the one before it held.
        with skipOnError():
            _validateValue(plan.desc, fieldPlan.fd, rules, value,
                           "%s[%d]" % (fieldPlan.label, i), "%s[%d]" % (fieldPath, i))


def _validateMap(message, plan, fieldPlan, path):
    values, fieldPath = _containerValues(message, plan, fieldPlan, path)
    keyRules = fieldPlan.keys
    for key in sorted(values):
        label = "%s[%s]" % (fieldPlan.label, key)
        itemPath = "%s[%s]" % (fieldPath, key)
        with skipOnError():
            if keyRules is not None and keyRules.check is not None:
                reason = keyRules.check(key)
                if reason is not None:
                    raise _violation(plan.desc, label, "map key: " + reason, itemPath)
            _validateValue(plan.desc, fieldPlan.valueFd, fieldPlan.values, values[key],
                           label, itemPath)


def _checkDuration(duration, path):
    # Envoy's MessageUtil::validateDurationFields.
    if duration.seconds < 0 or duration.nanos < 0:
        raise ConfigError(
            "Invalid duration: Expected positive duration: seconds: %d nanos: %d @ %s"
            % (duration.seconds, duration.nanos, path))
    if duration.seconds > _MAX_DURATION_SECONDS or duration.nanos > 999999999:
        raise ConfigError("Invalid duration: Duration out-of-range @ %s" % (path,))


def _validateAny(any_, path):
    """Unpack a C{typed_config} and check what is inside."""
    if not any_.type_url:
        return
    from txenvoy.config import protos

    typeName = any_.type_url.rsplit("/", 1)[-1]
    try:
        cls = protos.messageClass(typeName)
    except KeyError:
        raise ConfigError("could not find @type '%s' @ %s" % (any_.type_url, path))
    inner = cls()
    try:
        inner.ParseFromString(any_.value)
    except Exception as e:
        raise ConfigError("%s: cannot unpack %s: %s" % (path, typeName, e))
    if inner.DESCRIPTOR.full_name == "google.protobuf.Duration":
        _checkDuration(inner, path)
        return
    from txenvoy.config import typed_struct

    # A TypedStruct naming a protobuf type is checked as that message, at
    # its value's path.
    inner, path = typed_struct.unwrap(inner, path)
    _validateMessage(inner, path)
