# -*- test-case-name: tests.config.test_fields -*-
"""
Helpers every config builder shares: the check that no setting is silently
dropped, durations in seconds, and which fields are protobuf maps.
"""

import keyword

from txenvoy.config.errors import UnsupportedField, report


#: Message type name -> the fields its builders read or may leave out, as
#: they declare them to L{checkFields} (for the docs' table of supported
#: fields; config time only).
_declared = {}


def declaredFields(typeName):
    """
    The fields of message C{typeName} that txenvoy's builders declared when
    a config using it was built, sorted, or C{None} if none was built.
    """
    fields = _declared.get(typeName)
    return None if fields is None else sorted(fields)


def refusedFields(typeName):
    """
    The fields of message C{typeName} a config may set that its builders
    did not declare, so that setting one is refused with its path: sorted,
    or C{None} if no config using it was built (or the type is unknown).
    """
    from google.protobuf import descriptor_pool

    declared = _declared.get(typeName)
    if declared is None:
        return None
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(typeName)
    except KeyError:
        return None
    return sorted(f.name for f in descriptor.fields if f.name not in declared)


#: C{{type name: the allowed (and ignored) fields last noted in _declared}}.
_noted = {}
_notedIgnored = {}


def checkFields(message, allowed, path, ignored=()):
    """
    Report, as an L{UnsupportedField} naming its path, every field set in
    C{message} that is neither in C{allowed} nor harmless to leave out
    (C{ignored}); C{path} is C{""} for the bootstrap itself. Inside L{txenvoy.config.errors.collectErrors} every such
    field is reported and the caller goes on; outside, the first one raises.
    """
    typeName = message.DESCRIPTOR.full_name
    # What each call site declares is noted once (a config of ten
    # thousand endpoints makes fifty thousand calls).
    if _noted.get(typeName) is not allowed or _notedIgnored.get(typeName) is not ignored:
        declared = _declared.get(typeName)
        if declared is None:
            declared = _declared[typeName] = set()
        declared.update(allowed)
        declared.update(ignored)
        _noted[typeName] = allowed
        _notedIgnored[typeName] = ignored
    for field, _ in message.ListFields():
        name = field.name
        if name not in allowed and name not in ignored:
            report(UnsupportedField("%s.%s" % (path, name) if path else name))


def setsOtherFields(descriptor, allowed, ignored=()):
    """
    A fast test for hot loops (the endpoints of an assignment): a function
    telling whether a message of C{descriptor} sets a field that
    L{checkFields} would report with these C{allowed} and C{ignored} fields,
    reading only the fields outside them instead of listing every field
    set. Where it says so, call L{checkFields} for the report; it also
    notes the declared fields, so call it at least once per config.

    The test is one expression over those fields (C{m.HasField("a") or
    m.b != 0 or len(m.c) != 0}), compiled once: a loop over a table of
    fields costs ten times as much per message.
    """
    tests = []
    for fd in descriptor.fields:
        if fd.name in allowed or fd.name in ignored:
            continue
        # A field named like a Python keyword is read with getattr.
        value = ("getattr(m, %r)" if keyword.iskeyword(fd.name) else "m.%s") % (fd.name,)
        if fd.is_repeated:
            tests.append("len(%s) != 0" % (value,))
        elif fd.has_presence:
            tests.append("m.HasField(%r)" % (fd.name,))
        else:
            tests.append("%s != %r" % (value, fd.default_value))
    # Field names are identifiers and defaults are literals (numbers,
    # strings, bytes, booleans), all from the message's descriptor.
    return eval("lambda m: " + (" or ".join(tests) or "False"), {})


_mapEntries = {}


def mapEntry(fd):
    """
    The map entry type when the field C{fd} is a protobuf map, else
    C{None}; cached per field.
    """
    try:
        return _mapEntries[fd.full_name]
    except KeyError:
        pass
    entry = None
    if fd.is_repeated and fd.message_type is not None:
        if fd.message_type.GetOptions().map_entry:
            entry = fd.message_type
    _mapEntries[fd.full_name] = entry
    return entry


def durationSeconds(duration):
    """A C{google.protobuf.Duration} in float seconds."""
    return duration.seconds + duration.nanos / 1e9


def wholeMilliseconds(duration):
    """
    A C{google.protobuf.Duration} in float seconds, cut to whole
    milliseconds, as Envoy reads route timeouts.
    """
    return (duration.seconds * 1000 + duration.nanos // 1000000) / 1000.0
