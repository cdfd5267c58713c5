"""
Envoy's runtime: layered key/value settings read by filters while the
server runs (L{txenvoy.runtime.runtime}).
"""

from txenvoy.runtime.runtime import (
    AdminLayer,
    Entry,
    FractionalPercent,
    NoAdminLayer,
    OverrideLayer,
    Runtime,
    RuntimeFeatureFlag,
    RuntimeFractionalPercent,
    RuntimeYamlError,
    Snapshot,
)

__all__ = [
    "AdminLayer", "Entry", "FractionalPercent", "NoAdminLayer", "OverrideLayer", "Runtime",
    "RuntimeFeatureFlag", "RuntimeFractionalPercent", "RuntimeYamlError", "Snapshot",
]
