"""
twistd plugin: ``twistd envoy -c conf.yaml``.

Kept trivial and lazy: the real work lives in L{txenvoy.server.tap}, imported
only when the ``envoy`` subcommand runs, so a broken import there cannot hide
other plugins from ``twistd --help``.
"""
from twisted.application.service import ServiceMaker

TxEnvoy = ServiceMaker(
    "txenvoy",
    "txenvoy.server.tap",
    "Envoy's data plane on Twisted (reads Envoy v3 bootstrap YAML)",
    "envoy",
)
