"""
Tests for L{txenvoy.http.header_mutation}.
"""

from google.protobuf import json_format
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.route.v3 import route_components_pb2

from txenvoy.config.errors import ConfigError
from txenvoy.http.header_mutation import (
    ADD_IF_ABSENT,
    APPEND_IF_EXISTS_OR_ADD,
    EMPTY,
    OVERWRITE_IF_EXISTS,
    OVERWRITE_IF_EXISTS_OR_ADD,
    FormatContext,
    HeaderMutation,
    HeaderMutations,
    compileHeaderMutation,
)
from txenvoy.network.stream_info import StreamInfo


class FakeHeaders:
    """
    The header map interface the mutations use: an ordered list of
    C{(name, value)} with lower-case names.
    """

    def __init__(self, *pairs):
        self.entries = list(pairs)

    def get(self, name):
        for n, v in self.entries:
            if n == name:
                return v
        return None

    def getAll(self, name):
        return [v for n, v in self.entries if n == name]

    def add(self, name, value):
        self.entries.append((name, value))

    def set(self, name, value):
        self.remove(name)
        self.entries.append((name, value))

    def remove(self, name):
        self.entries = [(n, v) for n, v in self.entries if n != name]


class FakeRequestHead:
    """A request head: pseudo-headers as attributes, the rest in C{headers}."""

    def __init__(self, method, path, authority, headers):
        self.method = method
        self.path = path
        self.authority = authority
        self.headers = headers


def _compile(adds=(), removes=(), path="p"):
    """
    Compile a level from dicts in Envoy's YAML shape (a virtual host's
    request_headers_to_add / request_headers_to_remove).
    """
    vhost = json_format.ParseDict(
        {"request_headers_to_add": list(adds), "request_headers_to_remove": list(removes)},
        route_components_pb2.VirtualHost())
    return compileHeaderMutation(vhost.request_headers_to_add, vhost.request_headers_to_remove,
                                 path + ".request_headers_to_add",
                                 path + ".request_headers_to_remove")


def _add(key, value, **options):
    option = {"header": {"key": key, "value": value}}
    option.update(options)
    return option


class _StringContext:
    """A context whose formatter hook returns C{str}, as a third party's might."""

    def __init__(self):
        self.seen = []

    def format(self, compiled):
        self.seen.append(compiled)
        return "formatted"


class AppendActionTests(SynchronousTestCase):
    """
    Each C{append_action}, as Envoy's C{HeaderParser::evaluateHeaders}
    applies it.
    """

    def test_appendIsTheDefault(self):
        """
        With no C{append_action}, a value is appended next to an existing one
        (C{APPEND_IF_EXISTS_OR_ADD}).
        """
        headers = FakeHeaders((b"x-a", b"old"))
        _compile([_add("x-a", "new")]).apply(headers)
        self.assertEqual(headers.getAll(b"x-a"), [b"old", b"new"])

    def test_addIfAbsent(self):
        """
        C{ADD_IF_ABSENT} adds only when the header is missing.
        """
        mutation = _compile([_add("x-a", "new", append_action="ADD_IF_ABSENT")])
        present = FakeHeaders((b"x-a", b"old"))
        mutation.apply(present)
        self.assertEqual(present.getAll(b"x-a"), [b"old"])
        absent = FakeHeaders()
        mutation.apply(absent)
        self.assertEqual(absent.getAll(b"x-a"), [b"new"])

    def test_addIfAbsentSeesEmptyValueAsPresent(self):
        """
        A header that is there with an empty value counts as present.
        """
        headers = FakeHeaders((b"x-a", b""))
        _compile([_add("x-a", "new", append_action="ADD_IF_ABSENT")]).apply(headers)
        self.assertEqual(headers.getAll(b"x-a"), [b""])

    def test_overwriteIfExistsOrAdd(self):
        """
        C{OVERWRITE_IF_EXISTS_OR_ADD} replaces every existing value, or adds.
        """
        mutation = _compile([_add("x-a", "new", append_action="OVERWRITE_IF_EXISTS_OR_ADD")])
        headers = FakeHeaders((b"x-a", b"1"), (b"x-a", b"2"))
        mutation.apply(headers)
        self.assertEqual(headers.getAll(b"x-a"), [b"new"])
        empty = FakeHeaders()
        mutation.apply(empty)
        self.assertEqual(empty.getAll(b"x-a"), [b"new"])

    def test_overwriteIfExists(self):
        """
        C{OVERWRITE_IF_EXISTS} replaces an existing header and does nothing
        when there is none (checked on Envoy 1.40: the upstream got
        C{x-ovifexists: new} only when the client sent one).
        """
        mutation = _compile([_add("x-a", "new", append_action="OVERWRITE_IF_EXISTS")])
        headers = FakeHeaders((b"x-a", b"old"))
        mutation.apply(headers)
        self.assertEqual(headers.getAll(b"x-a"), [b"new"])
        empty = FakeHeaders()
        mutation.apply(empty)
        self.assertEqual(empty.entries, [])

    def test_deprecatedAppend(self):
        """
        The deprecated C{append: true} appends and C{append: false}
        overwrites.
        """
        headers = FakeHeaders((b"x-a", b"old"), (b"x-b", b"old"))
        _compile([_add("x-a", "new", append=True), _add("x-b", "new", append=False)]).apply(
            headers)
        self.assertEqual(headers.getAll(b"x-a"), [b"old", b"new"])
        self.assertEqual(headers.getAll(b"x-b"), [b"new"])

    def test_appendAndAppendActionTogether(self):
        """
        C{append} with a non-default C{append_action} is Envoy's error.
        """
        error = self.assertRaises(ConfigError, _compile, [
            _add("x-a", "v", append=True, append_action="ADD_IF_ABSENT")])
        self.assertEqual(
            str(error), "Both append and append_action are set and it's not allowed "
                        "@ p.request_headers_to_add[0]")

    def test_actionsAreCompiled(self):
        """
        The compiled additions carry Envoy's action numbers.
        """
        mutation = _compile([
            _add("a", "1"),
            _add("b", "1", append_action="ADD_IF_ABSENT"),
            _add("c", "1", append_action="OVERWRITE_IF_EXISTS_OR_ADD"),
            _add("d", "1", append_action="OVERWRITE_IF_EXISTS"),
        ])
        self.assertEqual([a.action for a in mutation.adds], [
            APPEND_IF_EXISTS_OR_ADD, ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD,
            OVERWRITE_IF_EXISTS])


class EvaluationOrderTests(SynchronousTestCase):
    """
    Removals first, values evaluated against the headers as they were, then
    overwrites, then appends.
    """

    def test_removeBeforeAdd(self):
        """
        C{headers_to_remove} runs first, so a removed header can be re-added.
        """
        headers = FakeHeaders((b"x-a", b"client"), (b"x-b", b"keep"))
        _compile([_add("x-a", "proxy")], ["X-A"]).apply(headers)
        self.assertEqual(headers.entries, [(b"x-b", b"keep"), (b"x-a", b"proxy")])

    def test_entriesDoNotSeeEachOther(self):
        """
        An C{OVERWRITE_IF_EXISTS} entry does not see a header added by an
        earlier entry of the same level: all entries are evaluated against
        the headers as they were.
        """
        headers = FakeHeaders()
        _compile([
            _add("x-a", "first"),
            _add("x-a", "second", append_action="OVERWRITE_IF_EXISTS"),
        ]).apply(headers)
        self.assertEqual(headers.getAll(b"x-a"), [b"first"])

    def test_overwritesBeforeAppends(self):
        """
        Overwrites are applied before appends, whatever their config order.
        """
        headers = FakeHeaders((b"x-a", b"old"))
        _compile([
            _add("x-a", "appended"),
            _add("x-a", "set", append_action="OVERWRITE_IF_EXISTS_OR_ADD"),
        ]).apply(headers)
        self.assertEqual(headers.getAll(b"x-a"), [b"set", b"appended"])

    def test_keyIsLowerCased(self):
        """
        Header names are lower-cased at config time.
        """
        headers = FakeHeaders()
        _compile([_add("X-Upper", "v")]).apply(headers)
        self.assertEqual(headers.entries, [(b"x-upper", b"v")])


class EmptyValueTests(SynchronousTestCase):
    """
    Envoy skips a header whose value is empty, unless C{keep_empty_value}.
    """

    def test_emptyPlainValueSkipped(self):
        """
        An empty literal value is dropped when the config loads.
        """
        mutation = _compile([_add("x-a", "")])
        self.assertEqual(mutation.adds, ())
        self.assertFalse(mutation)

    def test_keepEmptyValue(self):
        """
        C{keep_empty_value} adds the header with an empty value.
        """
        headers = FakeHeaders()
        _compile([_add("x-a", "", keep_empty_value=True)]).apply(headers)
        self.assertEqual(headers.entries, [(b"x-a", b"")])

    def test_emptyFormattedValueSkipped(self):
        """
        A formatted value that comes out empty (an unknown value is empty,
        not C{-}) is skipped, and kept with C{keep_empty_value}: on Envoy
        1.40 C{%REQ(x-missing)%} sent no header, and an empty one with
        C{keep_empty_value}.
        """
        mutation = _compile([
            _add("x-fmt", "%REQ(x-missing)%"),
            _add("x-keep", "%REQ(x-missing)%", keep_empty_value=True),
        ])
        request = FakeHeaders()
        headers = FakeHeaders()
        mutation.apply(headers, FormatContext(StreamInfo(Clock()), request))
        self.assertEqual(headers.entries, [(b"x-keep", b"")])


class FormattedValueTests(SynchronousTestCase):
    """
    Values with Envoy format operators go through the context's formatter
    hook; plain values cost nothing per request.
    """

    def test_plainValueHasNoFormatter(self):
        """
        A value without C{%} is plain bytes with no formatter.
        """
        (add,) = _compile([_add("x-a", "plain")]).adds
        self.assertIsNone(add.formatter)
        self.assertEqual(add.value, b"plain")

    def test_escapedPercentIsPlain(self):
        """
        C{%%} is a literal C{%} and needs no formatting (Envoy sent
        C{x-pct: 100%} for C{100%%}).
        """
        (add,) = _compile([_add("x-pct", "100%%")]).adds
        self.assertIsNone(add.formatter)
        self.assertEqual(add.value, b"100%")

    def test_streamInfoValues(self):
        """
        C{%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%}, C{%PROTOCOL%} and
        C{%REQ(x)%} are filled from the request.
        """
        streamInfo = StreamInfo(Clock())
        streamInfo.downstreamRemoteAddress = ("10.1.2.3", 4567)
        streamInfo.protocol = "HTTP/1.1"
        request = FakeHeaders((b"user-agent", b"curl/8"))
        headers = FakeHeaders()
        _compile([
            _add("x-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
            _add("x-info", "%PROTOCOL% via %REQ(user-agent)%"),
        ]).apply(headers, FormatContext(streamInfo, request))
        self.assertEqual(headers.entries, [
            (b"x-client", b"10.1.2.3"), (b"x-info", b"HTTP/1.1 via curl/8")])

    def test_requestHeadPseudoHeaders(self):
        """
        L{FormatContext} accepts a request head that keeps the pseudo-headers
        as attributes and the other headers in C{.headers}.
        """
        request = FakeRequestHead(b"GET", b"/p?q=1", b"h.example",
                                  FakeHeaders((b"user-agent", b"ua")))
        headers = FakeHeaders()
        _compile([_add("x-req", "%REQ(:method)% %REQ(:authority)%%REQ(:path)% %REQ(user-agent)%")]
                 ).apply(headers, FormatContext(StreamInfo(Clock()), request))
        self.assertEqual(headers.entries, [(b"x-req", b"GET h.example/p?q=1 ua")])

    def test_contextHookReceivesCompiledValue(self):
        """
        The mutation calls C{context.format(compiled)} for a formatted value
        and accepts C{str} back.
        """
        context = _StringContext()
        headers = FakeHeaders()
        mutation = _compile([_add("x-a", "%START_TIME%"), _add("x-b", "plain")])
        mutation.apply(headers, context)
        self.assertEqual(headers.entries, [(b"x-a", b"formatted"), (b"x-b", b"plain")])
        self.assertEqual(context.seen, [mutation.adds[0].formatter])

    def test_noContextUsesText(self):
        """
        Without a context the value's text is used as is, as Envoy does
        when it has no stream info.
        """
        headers = FakeHeaders()
        _compile([_add("x-a", "%UPSTREAM_HOST%")]).apply(headers)
        self.assertEqual(headers.entries, [(b"x-a", b"%UPSTREAM_HOST%")])

    def test_badFormat(self):
        """
        A malformed or unknown operator is rejected with Envoy's message.
        """
        error = self.assertRaises(ConfigError, _compile, [_add("x-a", "%FOO%")])
        self.assertIn("Not supported field in StreamInfo: FOO", str(error))
        self.assertIn("p.request_headers_to_add[0].header.value", str(error))
        error = self.assertRaises(ConfigError, _compile, [_add("x-a", "100%")])
        self.assertIn("Incorrect configuration: 100%. Couldn't find valid command at "
                      "position 3", str(error))


class ProtectedHeaderTests(SynchronousTestCase):
    """
    Envoy refuses to touch C{:}-prefixed headers and C{host}.
    """

    def test_addPseudoHeader(self):
        """
        Adding C{:path} is refused with Envoy's message.
        """
        error = self.assertRaises(ConfigError, _compile, [_add(":path", "/x")])
        self.assertEqual(str(error), ":-prefixed or host headers may not be modified "
                                     "@ p.request_headers_to_add[0].header.key")

    def test_addHost(self):
        """
        Adding C{Host}, in any case, is refused.
        """
        error = self.assertRaises(ConfigError, _compile, [_add("Host", "x")])
        self.assertTrue(str(error).startswith(":-prefixed or host headers may not be modified"))

    def test_removeHost(self):
        """
        Removing C{host} is refused with Envoy's message.
        """
        error = self.assertRaises(ConfigError, _compile, [], ["x-ok", "host"])
        self.assertEqual(str(error), ":-prefixed or host headers may not be removed "
                                     "@ p.request_headers_to_remove[1]")

    def test_rawValue(self):
        """
        C{raw_value} supplies the value when C{value} is not set.
        """
        option = route_components_pb2.VirtualHost().request_headers_to_add.add()
        option.header.key = "x-raw"
        option.header.raw_value = b"bytes"
        headers = FakeHeaders()
        compileHeaderMutation([option], [], "p").apply(headers)
        self.assertEqual(headers.entries, [(b"x-raw", b"bytes")])


class HeaderMutationsTests(SynchronousTestCase):
    """
    L{HeaderMutations} applies levels in order and is false when empty.
    """

    def test_levelsInOrder(self):
        """
        Levels are applied in order, so the last one wins an overwrite.
        """
        first = _compile([_add("x-order", "first",
                               append_action="OVERWRITE_IF_EXISTS_OR_ADD")])
        second = _compile([_add("x-order", "second",
                                append_action="OVERWRITE_IF_EXISTS_OR_ADD")])
        headers = FakeHeaders()
        HeaderMutations([first, second]).apply(headers)
        self.assertEqual(headers.getAll(b"x-order"), [b"second"])

    def test_emptyLevelsDropped(self):
        """
        Empty levels are dropped, and a chain with nothing to do is false.
        """
        self.assertFalse(HeaderMutations([HeaderMutation(), _compile()]))
        self.assertFalse(EMPTY)
        level = _compile([_add("x", "1")])
        chain = HeaderMutations([HeaderMutation(), level])
        self.assertTrue(chain)
        self.assertEqual(chain.levels, (level,))

    def test_then(self):
        """
        C{then} appends a level or a chain.
        """
        a = _compile([_add("x", "a")])
        b = _compile([_add("x", "b")])
        chain = HeaderMutations([a]).then(b)
        self.assertEqual(chain.levels, (a, b))
        self.assertEqual(HeaderMutations([a]).then(HeaderMutations([b])).levels, (a, b))
