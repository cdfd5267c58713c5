"""
Access logs: format strings (L{txenvoy.accesslog.formatter}), the outputs
they are written to (L{txenvoy.accesslog.manager}) and the C{filter} of an
C{access_log} entry (L{txenvoy.accesslog.filters}). The loggers themselves
are extensions, in L{txenvoy.extensions.access_loggers}.
"""
