"""
txenvoy: Envoy's data plane rebuilt on Twisted.

Reads Envoy's own v3 bootstrap, runs as ``twistd envoy -c conf.yaml`` and can
be embedded in any Twisted application (see L{txenvoy.server.server.Server}).
"""

__version__ = "0.1.0"

#: What C{--version} and C{/server_info} report; shaped like Envoy's
#: ``<sha>/<version>/<status>/<build type>/<ssl>`` string.
VERSION_STRING = "txenvoy/%s/Clean/RELEASE/OpenSSL" % (__version__,)
