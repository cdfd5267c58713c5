"""Network (L4) filters, each registered by its C{@type}."""

from txenvoy.extensions.filters.network import direct_response, echo, tcp_proxy  # noqa: F401
