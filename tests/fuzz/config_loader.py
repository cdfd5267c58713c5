"""
Fuzz target: the bootstrap loader (L{txenvoy.config.loader}) and the build
of every object from the config, as C{twistd envoy --mode validate
--config-yaml TEXT} does.

The input is the YAML text (bytes decoded as the command line's are, UTF-8
with C{surrogateescape}); or, when it starts with a NUL, edits to one of the
valid configs of the seed corpus (L{editedConfig}: values replaced by
values of other types, out of range or taken from elsewhere in the config,
entries deleted or repeated), which reach the checks past the YAML and
protobuf parsers far more often. The text goes through L{loadBootstrap},
and a bootstrap
that loads is built into a L{Server} with C{validateOnly} on a
C{MemoryReactorClock} (with C{--concurrency 0}, so that no worker reactor
is made per input; the objects built from the config are the same).

Accepted: a server is built. A proper rejection is a L{ConfigError}: the
entry point prints its message on one line and exits 1. Anything else is a
crash: an exception other than L{ConfigError} (twistd would print a
traceback), or a L{ConfigError} made by the loader's last-resort
C{except Exception} ("invalid config: TypeError: ..."), which means the
code raised something it did not mean to and the user gets a Python
exception's name instead of a message naming the field.
"""

import json
import os

import yaml
from twisted.internet.testing import MemoryReactorClock

from tests.fuzz.support import FuzzFailure, FuzzInput
from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap
from txenvoy.server.options import ServerOptions
from txenvoy.server.server import Server

#: How the loader's last-resort handler starts its message.
LAST_RESORT = "invalid config: "


_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "config_loader")

# Values put in place of what a config has.
_VALUES = (None, "", 0, -1, 2 ** 64, 1.5e300, "nan", True, [], {}, "1s", "0.000000001s",
           "-1s", "315576000001s", "*", "0.0.0.0", "::", "STATIC", "type.googleapis.com/x",
           {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
           {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {}})

_bases = []


def _baseConfigs():
    """The seed configs that are valid YAML mappings, as JSON text."""
    if not _bases:
        for name in sorted(os.listdir(_CORPUS)):
            with open(os.path.join(_CORPUS, name), "rb") as f:
                try:
                    data = yaml.safe_load(f)
                except yaml.YAMLError:
                    continue
            if isinstance(data, dict):
                _bases.append(json.dumps(data))
    return _bases


def _locations(node, out):
    """Append C{(container, key)} for every value under C{node}."""
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return out
    for key, value in items:
        out.append((node, key))
        _locations(value, out)
    return out


def editedConfig(inp):
    """
    A seed config edited as the input says: a byte picks the config, then
    each edit is two bytes picking a value anywhere in it and a byte saying
    what to do to it (with more bytes for a string or a number).

    @return: the config, as JSON text (which YAML reads too).
    """
    bases = _baseConfigs()
    config = json.loads(bases[inp.byte() % len(bases)])
    for _ in range(1 + inp.byte() % 8):
        places = _locations(config, [])
        if not places:
            break
        container, key = places[((inp.byte() << 8) | inp.byte()) % len(places)]
        action = inp.byte() % (len(_VALUES) + 6)
        if action < len(_VALUES):
            container[key] = json.loads(json.dumps(_VALUES[action]))
        elif action == len(_VALUES):
            container[key] = inp.take(inp.byte() % 24).decode("latin-1")
        elif action == len(_VALUES) + 1:
            container[key] = int.from_bytes(inp.take(5), "big", signed=True)
        elif action == len(_VALUES) + 2:
            del container[key]
        elif action == len(_VALUES) + 3:
            if isinstance(container, list):
                container.append(json.loads(json.dumps(container[key])))
        elif action == len(_VALUES) + 4:
            other, otherKey = places[inp.byte() % len(places)]
            container[key] = json.loads(json.dumps(other[otherKey]))
        else:
            container[key] = [container[key]]
    return json.dumps(config)


def testOneInput(data):
    """Load C{data} as C{--config-yaml} and build a server from it."""
    if data[:1] == b"\x00":
        inp = FuzzInput(data)
        inp.byte()
        text = editedConfig(inp)
    else:
        text = data.decode("utf-8", "surrogateescape")
    try:
        bootstrap = loadBootstrap(configYaml=text)
    except ConfigError as e:
        if str(e).startswith(LAST_RESORT):
            raise FuzzFailure("an internal error dressed as a config error: %s" % (e,))
        return
    options = ServerOptions(configYaml=text, mode="validate", concurrency=0)
    try:
        Server(MemoryReactorClock(), bootstrap, options, validateOnly=True)
    except ConfigError:
        return
