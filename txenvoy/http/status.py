# -*- test-case-name: tests.http.http1.test_server_codec -*-
"""
HTTP status codes and reason phrases, as Envoy writes them
(C{CodeUtility::toString}): codes Envoy does not name get C{Unknown}, even
where an RFC names them (418, 451).
"""

__all__ = ["REASONS", "reasonPhrase", "statusLine"]

#: Envoy's reason phrases, by code.
REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    207: "Multi-Status",
    208: "Already Reported",
    226: "IM Used",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Payload Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    421: "Misdirected Request",
    422: "Unprocessable Entity",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    510: "Not Extended",
    511: "Network Authentication Required",
    599: "Last Unassigned Server Error Code",
}


def reasonPhrase(code):
    """
    @param code: an HTTP status code (int).
    @return: Envoy's reason phrase for it (str), C{"Unknown"} when it has
        none.
    """
    return REASONS.get(code, "Unknown")


# Built on first use per (version, code), so serialising a response's first
# line is one dict lookup.
_STATUS_LINES = {}


def statusLine(code, http10=False):
    """
    @param code: an HTTP status code (int).
    @param http10: write C{HTTP/1.0} instead of C{HTTP/1.1}.
    @return: the status line with its CRLF, e.g. C{b"HTTP/1.1 200 OK\\r\\n"}.
    """
    key = -code if http10 else code
    line = _STATUS_LINES.get(key)
    if line is None:
        line = ("%s %d %s\r\n" % (
            "HTTP/1.0" if http10 else "HTTP/1.1", code, reasonPhrase(code),
        )).encode("ascii")
        if 100 <= code <= 999:
            _STATUS_LINES[key] = line
    return line
