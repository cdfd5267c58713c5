# -*- test-case-name: tests.http.test_header_dump -*-
"""
Header maps as Envoy's debug log prints them (C{HeaderMap}'s C{operator<<}):
one C{'name', 'value'} line per header, pseudo-headers first, and a
trailing newline, so that a dump ends its log line with an empty line::

    [...][debug][http] [...] [Tags: ...] request headers complete (end_stream=true):
    ':authority', '127.0.0.1:10000'
    ':path', '/'
    ':method', 'GET'
    'user-agent', 'curl/7.88.1'

Only called once the level is known to be on.
"""


def _line(name, value):
    return "'%s', '%s'\n" % (name, value.decode("latin-1"))


def _ordinary(headers):
    return "".join("'%s', '%s'\n" % (n.decode("latin-1"), v.decode("latin-1"))
                   for n, v in headers.items())


def dumpRequestHeaders(request, scheme=None):
    """
    A request head in the order Envoy's HTTP/1 codec builds it:
    C{:authority}, C{:path}, C{:method}, then C{:scheme} once the router
    has set it (C{scheme}), then the ordinary headers.

    @param request: the L{txenvoy.http.headers.RequestHeaders}.
    @param scheme: C{b"http"} / C{b"https"} when the dump is the router's.
    """
    parts = []
    if request.authority is not None:
        parts.append(_line(":authority", request.authority))
    if request.path is not None:
        parts.append(_line(":path", request.path))
    parts.append(_line(":method", request.method))
    if scheme is not None:
        parts.append(_line(":scheme", scheme))
    parts.append(_ordinary(request.headers))
    return "".join(parts)


def dumpResponseHeaders(response):
    """
    A response head: C{:status}, then the ordinary headers.

    @param response: the L{txenvoy.http.headers.ResponseHeaders}.
    """
    return "':status', '%d'\n" % (response.status,) + _ordinary(response.headers)
