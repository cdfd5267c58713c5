"""
Fuzz targets for txenvoy's parsers, each fed raw bytes through the real
entry point with Twisted's fakes: the HTTP/1.1 server and client codecs, the
bootstrap loader, route matching, the access log format compiler, the PROXY
protocol listener filter and the TLS ClientHello reader.

Every target module has C{testOneInput(data)}: it returns normally for any
input the code handles (accepted, or rejected the way that code path
rejects input), and raises for anything else, either an exception that
escaped where the real code path would have let it reach the reactor, or a
L{tests.fuzz.support.FuzzFailure} for a broken invariant.

Long coverage-guided runs use atheris (C{python -m tests.fuzz.run}); the
test suite runs every target briefly (L{tests.fuzz.test_targets}).
"""

#: The target modules, by name (each is C{tests.fuzz.<name>}).
TARGETS = (
    "http_server",
    "http_client",
    "config_loader",
    "route_match",
    "access_log_format",
    "proxy_protocol",
    "tls_client_hello",
)
