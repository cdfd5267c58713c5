"""Network (L4) filters, each registered by its C{@type}."""
