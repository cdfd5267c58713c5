# -*- test-case-name: tests.server.test_logformat -*-
"""
C{--log-format}: Envoy's application log line layout in spdlog's pattern
syntax, compiled once into a function that prints one line.

Flags (as Envoy 1.40 prints them): C{%Y %m %d %H %M %S} date and time
parts, C{%T} (C{%H:%M:%S}), C{%D} (C{%m/%d/%y}), C{%e %f %F} milli-,
micro- and nanoseconds, C{%z} UTC offset, C{%t} thread id, C{%P} process
id, C{%l} level (C{info}), C{%L} its letter (C{I}), C{%n} logger name,
C{%v} message, C{%_} message with C-style escapes escaped, C{%j} message
JSON-escaped, C{%g} source path, C{%s} its file name, C{%#} line, C{%%}.
Colour marks C{%^ %$} print nothing; any other flag prints as written.
"""

import json
import os
import time

_LETTERS = {"trace": "T", "debug": "D", "info": "I", "warning": "W", "error": "E",
            "critical": "C", "off": "O"}


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"', "'": "\\'"}


def cEscape(text):
    """Escape C-style sequences (C{--log-format-escaped}): one line per event."""
    out = []
    for ch in text:
        escape = _ESCAPES.get(ch)
        if escape is None and (ord(ch) < 0x20 or ord(ch) == 0x7f):
            escape = "\\%03o" % (ord(ch),)
        out.append(ch if escape is None else escape)
    return "".join(out)


def _utcOffset(t):
    offset = time.localtime(t).tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    offset = abs(offset)
    return "%s%02d:%02d" % (sign, offset // 3600, (offset % 3600) // 60)


# Each takes the record (t, tm, tid, level, name, message, location) and
# returns text.
_FLAGS = {
    "Y": lambda r: "%04d" % (r[1].tm_year,),
    "m": lambda r: "%02d" % (r[1].tm_mon,),
    "d": lambda r: "%02d" % (r[1].tm_mday,),
    "H": lambda r: "%02d" % (r[1].tm_hour,),
    "M": lambda r: "%02d" % (r[1].tm_min,),
    "S": lambda r: "%02d" % (r[1].tm_sec,),
    "T": lambda r: time.strftime("%H:%M:%S", r[1]),
    "D": lambda r: time.strftime("%m/%d/%y", r[1]),
    "e": lambda r: "%03d" % (int((r[0] % 1) * 1e3),),
    "f": lambda r: "%06d" % (int((r[0] % 1) * 1e6),),
    "F": lambda r: "%09d" % (int((r[0] % 1) * 1e6) * 1000,),
    "z": lambda r: _utcOffset(r[0]),
    "t": lambda r: str(r[2]),
    "P": lambda r: str(os.getpid()),
    "l": lambda r: r[3],
    "L": lambda r: _LETTERS.get(r[3], "?"),
    "n": lambda r: r[4],
    "v": lambda r: r[5],
    "_": lambda r: cEscape(r[5]),
    "j": lambda r: json.dumps(r[5])[1:-1],
    "g": lambda r: (r[6] or ":").rpartition(":")[0],
    "s": lambda r: os.path.basename((r[6] or ":").rpartition(":")[0]),
    "#": lambda r: (r[6] or ":").rpartition(":")[2],
    "^": lambda r: "",
    "$": lambda r: "",
}


def compileLogFormat(pattern, escaped=False):
    """
    @param pattern: the C{--log-format} value.
    @param escaped: C{--log-format-escaped}: C{%v} escapes C-style
        sequences, so every event is one line.
    @return: C{render(t, tid, level, name, message, location)} returning
        the line, newline included; C{location} is C{"path:line"} or
        C{None}.
    """
    parts = []
    literal = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%" and i + 1 < len(pattern):
            flag = pattern[i + 1]
            i += 2
            if flag == "%":
                literal.append("%")
                continue
            if flag == "v" and escaped:
                flag = "_"
            func = _FLAGS.get(flag)
            if func is None:
                literal.append("%" + flag)
                continue
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(func)
        else:
            literal.append(ch)
            i += 1
    if literal:
        parts.append("".join(literal))

    def render(t, tid, level, name, message, location):
        record = (t, time.localtime(t), tid, level, name, message, location)
        return "".join(p if isinstance(p, str) else p(record) for p in parts) + "\n"

    return render
