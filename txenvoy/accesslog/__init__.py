"""
Access logs: the outputs they are written to (L{txenvoy.accesslog.manager})
and the C{filter} of an C{access_log} entry (L{txenvoy.accesslog.filters}).
Their format strings are Envoy's substitution formatter, shared with header
mutation and local replies (L{txenvoy.formatter}). The loggers themselves
are extensions, in L{txenvoy.extensions.access_loggers}.
"""
