"""
Bootstrap extensions (Envoy's C{envoy.bootstrap.*}), each registered by its
C{typed_config} C{@type}: process-wide features turned on from the
bootstrap's C{bootstrap_extensions}.
"""
