# -*- test-case-name: tests.http.http1.test_server_codec -*-
"""
Header maps (Envoy's C{HeaderMap}, C{RequestHeaderMap}, C{ResponseHeaderMap}).

A L{HeaderMap} is an ordered list of C{(name, value)} pairs of C{bytes}, with
names lower-cased as Envoy does for HTTP/1. Pseudo-headers are plain
attributes of L{RequestHeaders} and L{ResponseHeaders} rather than
C{:method} entries, so the map only holds what goes on the wire as a header
line, and the codec never has to skip or translate entries while it
serialises them.
"""

__all__ = ["HeaderMap", "RequestHeaders", "ResponseHeaders", "startRequest"]


class HeaderMap:
    """
    Ordered header list with the lookups filters need.

    Names passed to the methods below are lower-cased before use (Envoy's
    C{LowerCaseString}); the codec fills the map with names that are already
    lower case. Values are kept byte for byte. Repeated names are kept as
    separate entries, in order.

    Lookups are linear: a request carries a handful of headers, and a scan of
    a short list of tuples beats keeping a dict in step with every insert.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries=None):
        """
        @param entries: an iterable of C{(name, value)} pairs; names are
            lower-cased.
        """
        if entries is None:
            self._entries = []
        else:
            self._entries = [(n.lower(), v) for n, v in entries]

    @classmethod
    def fromList(cls, entries):
        """
        Wrap C{entries}, a list of C{(lower-case name, value)} tuples, without
        copying or checking it (the codecs' path).
        """
        m = _new(cls)
        m._entries = entries
        return m

    _fromList = fromList

    def get(self, name, default=None):
        """
        @return: the value of the first entry named C{name}, or C{default}.
        """
        name = name.lower()
        for n, v in self._entries:
            if n == name:
                return v
        return default

    def getAll(self, name):
        """
        @return: a list of the values of every entry named C{name}, in order.
        """
        name = name.lower()
        return [v for n, v in self._entries if n == name]

    def add(self, name, value):
        """
        Append an entry, keeping any existing entries of the same name.
        """
        self._entries.append((name.lower(), value))

    def set(self, name, value):
        """
        Replace the first entry named C{name} in place (so its position is
        kept, as Envoy keeps C{server} at the upstream's position) and drop
        any later ones; append when there is none.
        """
        name = name.lower()
        entries = self._entries
        for i, (n, _) in enumerate(entries):
            if n == name:
                entries[i] = (name, value)
                j = i + 1
                while j < len(entries):
                    if entries[j][0] == name:
                        del entries[j]
                    else:
                        j += 1
                return
        entries.append((name, value))

    def setDefault(self, name, value):
        """
        Append C{name: value} unless an entry of that name exists.

        @return: the value in effect.
        """
        name = name.lower()
        for n, v in self._entries:
            if n == name:
                return v
        self._entries.append((name, value))
        return value

    def remove(self, name):
        """
        Remove every entry named C{name}.

        @return: how many entries were removed.
        """
        name = name.lower()
        entries = self._entries
        kept = [e for e in entries if e[0] != name]
        removed = len(entries) - len(kept)
        if removed:
            entries[:] = kept
        return removed

    def removePrefix(self, prefix):
        """
        Remove every entry whose name starts with C{prefix}.

        @return: how many entries were removed.
        """
        prefix = prefix.lower()
        entries = self._entries
        kept = [e for e in entries if not e[0].startswith(prefix)]
        removed = len(entries) - len(kept)
        if removed:
            entries[:] = kept
        return removed

    def items(self):
        """
        @return: the live list of C{(name, value)} tuples, in order. Callers
            that mutate it take responsibility for lower-case names.
        """
        return self._entries

    def copy(self):
        """@return: an independent L{HeaderMap} with the same entries."""
        return HeaderMap.fromList(list(self._entries))

    def byteSize(self):
        """
        @return: the size of the entries as header lines
            (C{name: value\\r\\n}), as Envoy counts against header limits.
        """
        return sum(len(n) + len(v) + 4 for n, v in self._entries)

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def __contains__(self, name):
        name = name.lower()
        for n, _ in self._entries:
            if n == name:
                return True
        return False

    def __eq__(self, other):
        if isinstance(other, HeaderMap):
            return self._entries == other._entries
        return NotImplemented

    def __repr__(self):
        return "HeaderMap(%r)" % (self._entries,)


_new = object.__new__


class RequestHeaders:
    """
    A request head (Envoy's C{RequestHeaderMap}): the pseudo-headers as
    attributes plus the L{HeaderMap} of ordinary headers.

    The codec takes the C{Host} header out of the map into L{authority}
    (Envoy's C{:authority}), and the upstream codec writes it back as the
    first header line, where Envoy writes it.

    @ivar method: C{b"GET"} etc.
    @ivar path: origin-form path and query (C{b"/p?q=1"}); C{b"*"} for
        C{OPTIONS *}; C{None} for C{CONNECT}.
    @ivar authority: host (and port) from an absolute-form target, else the
        C{Host} header (several are joined with C{,}, as Envoy does), else
        the configured default for HTTP/1.0; C{None} when there is none.
    @ivar scheme: C{b"http"}/C{b"https"} from an absolute-form target, else
        C{None} (the connection manager knows whether the connection is
        TLS).
    @ivar version: C{"HTTP/1.1"} or C{"HTTP/1.0"} (HTTP/0.9 and other
        versions are served as 1.0 when HTTP/1.0 is accepted, as Envoy
        does).
    @ivar headers: the L{HeaderMap}.
    @ivar upgrade: the lower-cased C{Upgrade} value of an upgrade request
        (C{b"websocket"}), C{b"connect"} for C{CONNECT}, else C{None}. An
        C{h2c} upgrade is not one: Envoy strips it and serves HTTP/1.1.
    @ivar keepAlive: whether the client allows the connection to be reused
        after this request.
    @ivar contentLength: the request's C{Content-Length} as an int, or
        C{None}.
    @ivar chunked: whether the body came chunked (the decoder sees it
        de-chunked; the C{Transfer-Encoding} header is not in the map).
    """

    __slots__ = (
        "method", "path", "authority", "scheme", "version", "headers",
        "upgrade", "keepAlive", "contentLength", "chunked",
    )

    def __init__(self, method, path, authority=None, scheme=None,
                 version="HTTP/1.1", headers=None):
        startRequest(self, method, path, authority, scheme, version,
                     HeaderMap() if headers is None else headers)

    @property
    def host(self):
        """Alias of L{authority}."""
        return self.authority

    @host.setter
    def host(self, value):
        self.authority = value

    def __repr__(self):
        return "<RequestHeaders %s %r %r %s %r>" % (
            self.method.decode("latin-1"), self.path, self.authority,
            self.version, self.headers._entries)


def startRequest(self, method, path, authority, scheme, version, headers):
    """
    Fill C{self}, a new L{RequestHeaders}, as its C{__init__} does, and
    return it: a codec makes one per request with
    C{startRequest(object.__new__(RequestHeaders), ...)}, without Python's
    class call, whose path through C{__init__} costs about as much as
    filling the fields.
    """
    self.method = method
    self.path = path
    self.authority = authority
    self.scheme = scheme
    self.version = version
    self.headers = headers
    self.upgrade = None
    self.keepAlive = True
    self.contentLength = None
    self.chunked = False
    return self


class ResponseHeaders:
    """
    A response head (Envoy's C{ResponseHeaderMap}).

    @ivar status: the status code, an int.
    @ivar reason: the reason phrase as received from an upstream (bytes), or
        C{None}. The downstream codec always writes the standard phrase for
        the status, as Envoy does, so this is informational.
    @ivar headers: the L{HeaderMap}.
    @ivar version: C{"HTTP/1.1"} or C{"HTTP/1.0"} as received upstream.
    @ivar contentLength: the upstream's C{Content-Length}, or C{None} (set by
        the upstream codec; the downstream codec reads the map).
    """

    __slots__ = ("status", "reason", "headers", "version", "contentLength")

    def __init__(self, status, headers=None, reason=None, version="HTTP/1.1"):
        self.status = status
        self.reason = reason
        self.headers = HeaderMap() if headers is None else headers
        self.version = version
        self.contentLength = None

    def __repr__(self):
        return "<ResponseHeaders %d %r>" % (self.status, self.headers._entries)
