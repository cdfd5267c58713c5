"""
Envoy's substitution formatter (C{source/common/formatter/}): the
C{%COMMAND%} format strings shared by access logs, header mutation
(C{request_headers_to_add} values) and local replies (C{body_format}).
See L{txenvoy.formatter.substitution}.
"""
