# -*- test-case-name: tests.upstream.test_subset_lb -*-
"""
The metadata that subset load balancing matches: a route's
C{metadata_match} (Envoy's C{Router::MetadataMatchCriteriaImpl}) and an
endpoint's C{metadata} under the C{envoy.lb} filter namespace.

Both become criteria: a tuple of C{(key, value)} pairs sorted by key,
where a value is the canonical JSON text of the C{google.protobuf.Value},
so that equal values compare and hash equal however they were written
(C{1} and C{1.0} are the same number, as in Envoy).
"""

import json

from google.protobuf import json_format

#: The filter metadata namespace of load balancing metadata.
LB_NAMESPACE = "envoy.lb"
#: The route metadata key of C{metadata_fallback_policy: FALLBACK_LIST}.
FALLBACK_LIST_KEY = "fallback_list"


def canonicalValue(value):
    """C{value} (a Python value from a Struct) as its canonical JSON text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def structCriteria(struct):
    """
    @param struct: a C{google.protobuf.Struct}.
    @return: its fields as criteria (sorted C{(key, canonical value)}).
    """
    fields = json_format.MessageToDict(struct)
    return tuple(sorted((k, canonicalValue(v)) for k, v in fields.items()))


def metadataCriteria(metadata):
    """
    @param metadata: a C{core.v3.Metadata} message.
    @return: the criteria of its C{envoy.lb} namespace, or C{None} when it
        has none.
    """
    if LB_NAMESPACE not in metadata.filter_metadata:
        return None
    return structCriteria(metadata.filter_metadata[LB_NAMESPACE]) or None


def mergeCriteria(base, override):
    """
    Envoy's C{mergeMatchCriteria}: C{override}'s values win on shared keys
    (a weighted cluster's over its route's).
    """
    if not base:
        return override
    if not override:
        return base
    merged = dict(base)
    merged.update(override)
    return tuple(sorted(merged.items()))


def hostValues(metadata):
    """
    A host's C{envoy.lb} metadata for matching.

    @param metadata: a C{core.v3.Metadata} message.
    @return: C{{key: (canonical value, (canonical list elements) or None)}};
        the elements serve C{list_as_any}.
    """
    if LB_NAMESPACE not in metadata.filter_metadata:
        return {}
    fields = json_format.MessageToDict(metadata.filter_metadata[LB_NAMESPACE])
    out = {}
    for key, value in fields.items():
        elements = None
        if isinstance(value, list):
            elements = tuple(canonicalValue(v) for v in value)
        out[key] = (canonicalValue(value), elements)
    return out
