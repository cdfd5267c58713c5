# -*- test-case-name: tests.stats.test_tags -*-
"""
Tag extraction: Envoy's default tag extractors (C{well_known_names.cc})
turn a flat stat name into a tag-extracted name plus tags, which is what
C{/stats/prometheus} and tagged sinks print::

    cluster.c1.upstream_rq_200
    -> ("cluster.upstream_rq",
        (("envoy.response_code", "200"), ("envoy.cluster_name", "c1")))

As in Envoy, every extractor matches against the whole original name; the
text of each match's first group is removed at the end, and the second
group is the tag value. Extractors whose regex starts with a literal first
token (C{^cluster\\.}) only run on names with that first token; the others
run first, on every name. That order is the order of the tags.
"""

import re
import threading

from txenvoy.config.errors import ConfigError

# Stand-ins used by Envoy's regexes (expandRegex in well_known_names.cc).
_WORD = r"[^\.]+"
_ADDRESS = (r"(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}_\d+"
            r"|\[[_aAbBcCdDeEfF0-9]+\]_\d+)")
_CIPHER = r"[0-9A-Za-z_-]+"
_ROUTE_CONFIG_NAME = r"[\w\-\.]+"


class TagNames:
    """Envoy's well-known tag names (C{Config::TagNames})."""

    CLUSTER_NAME = "envoy.cluster_name"
    LISTENER_ADDRESS = "envoy.listener_address"
    HTTP_CONN_MANAGER_PREFIX = "envoy.http_conn_manager_prefix"
    RESPONSE_CODE = "envoy.response_code"
    RESPONSE_CODE_CLASS = "envoy.response_code_class"
    TCP_PREFIX = "envoy.tcp_prefix"
    UDP_PREFIX = "envoy.udp_prefix"
    WORKER_ID = "envoy.worker_id"
    VIRTUAL_HOST = "envoy.virtual_host"
    VIRTUAL_CLUSTER = "envoy.virtual_cluster"
    HTTP_USER_AGENT = "envoy.http_user_agent"
    FAULT_DOWNSTREAM_CLUSTER = "envoy.fault_downstream_cluster"
    SSL_CIPHER = "envoy.ssl_cipher"
    # Envoy's name for the upstream cipher tag has no "envoy." prefix.
    SSL_CIPHER_SUITE = "cipher_suite"
    SSL_CURVE = "envoy.ssl_curve"
    SSL_SIGALG = "envoy.ssl_sigalg"
    SSL_VERSION = "envoy.ssl_version"
    TLS_CERTIFICATE = "envoy.tls_certificate"
    CONNECTION_LIMIT_PREFIX = "envoy.connection_limit_prefix"
    LOCAL_NETWORK_RATELIMIT_PREFIX = "envoy.local_network_ratelimit_prefix"
    LOCAL_HTTP_RATELIMIT_PREFIX = "envoy.local_http_ratelimit_prefix"
    RBAC_PREFIX = "envoy.rbac_prefix"
    GRPC_BRIDGE_SERVICE = "envoy.grpc_bridge_service"
    GRPC_BRIDGE_METHOD = "envoy.grpc_bridge_method"
    CLIENTSSL_PREFIX = "envoy.clientssl_prefix"
    RATELIMIT_PREFIX = "envoy.ratelimit_prefix"
    RDS_ROUTE_CONFIG = "envoy.rds_route_config"
    MONGO_PREFIX = "envoy.mongo_prefix"
    REDIS_PREFIX = "envoy.redis_prefix"
    DYNAMO_TABLE = "envoy.dynamo_table"
    DYNAMO_OPERATION = "envoy.dynamo_operation"
    DYNAMO_PARTITION_ID = "envoy.dynamo_partition_id"
    MONGO_CMD = "envoy.mongo_cmd"
    MONGO_COLLECTION = "envoy.mongo_collection"
    MONGO_CALLSITE = "envoy.mongo_callsite"


def _expand(regex):
    return (regex.replace("<ADDRESS>", _ADDRESS)
            .replace("<CIPHER>", _CIPHER)
            .replace("<ROUTE_CONFIG_NAME>", _ROUTE_CONFIG_NAME)
            .replace("<WORD>", _WORD))


# (tag name, regex) in Envoy's order. Group 1 is removed from the name,
# group 2 (or 1 when there is only one) is the value.
_DEFAULTS = [
    (TagNames.RESPONSE_CODE, r"_rq(_(\d{3}))$"),
    (TagNames.RESPONSE_CODE_CLASS, r"_rq_((\d))xx$"),
    (TagNames.DYNAMO_PARTITION_ID,
     r"^http\.<WORD>\.dynamodb\.table\.<WORD>\.capacity\.<WORD>(\.__partition_id=(\w{7}))$"),
    (TagNames.DYNAMO_OPERATION,
     r"^http\.<WORD>\.dynamodb.(?:operation|table\.<WORD>\.capacity)(\.(<WORD>))(?:\.|$)"),
    (TagNames.MONGO_CALLSITE,
     r"^mongo\.<WORD>\.collection\.<WORD>\.callsite\.((<WORD>)\.)query\."),
    (TagNames.DYNAMO_TABLE, r"^http\.<WORD>\.dynamodb.(?:table|error)\.((<WORD>)\.)"),
    (TagNames.MONGO_COLLECTION, r"^mongo\.<WORD>\.collection\.((<WORD>)\.).*?query\."),
    (TagNames.MONGO_CMD, r"^mongo\.<WORD>\.cmd\.((<WORD>)\.)"),
    (TagNames.GRPC_BRIDGE_METHOD, r"^cluster\.<WORD>\.grpc\.<WORD>\.((<WORD>)\.)"),
    (TagNames.HTTP_USER_AGENT, r"^http\.<WORD>\.user_agent\.((<WORD>)\.)"),
    (TagNames.VIRTUAL_CLUSTER, r"^vhost\.<WORD>\.vcluster\.((<WORD>)\.)"),
    (TagNames.FAULT_DOWNSTREAM_CLUSTER, r"^http\.<WORD>\.fault\.((<WORD>)\.)"),
    (TagNames.SSL_CIPHER, r"^listener\..*?\.ssl\.ciphers(\.(<CIPHER>))$"),
    (TagNames.SSL_CIPHER_SUITE, r"^cluster\.<WORD>\.ssl\.ciphers(\.(<CIPHER>))$"),
    (TagNames.SSL_CURVE, r"^(?:listener|cluster)\..*?\.ssl\.curves(\.(<WORD>))$"),
    (TagNames.SSL_SIGALG, r"^(?:listener|cluster)\..*?\.ssl\.sigalgs(\.(<WORD>))$"),
    (TagNames.SSL_VERSION, r"^(?:listener|cluster)\..*?\.ssl\.versions(\.(.+))$"),
    (TagNames.TLS_CERTIFICATE,
     r"^(?:listener|cluster)\..*?\.ssl\.certificate(\.(<WORD>))\.expiration_unix_time_seconds$"),
    (TagNames.GRPC_BRIDGE_SERVICE, r"^cluster\.<WORD>\.grpc\.((<WORD>)\.)"),
    (TagNames.TCP_PREFIX, r"^tcp\.((<WORD>)\.)"),
    (TagNames.UDP_PREFIX, r"^udp\.((<WORD>)\.)"),
    (TagNames.CLIENTSSL_PREFIX, r"^auth\.clientssl\.((<WORD>)\.)"),
    (TagNames.RATELIMIT_PREFIX, r"^ratelimit\.((<WORD>)\.)"),
    (TagNames.CLUSTER_NAME, r"^cluster\.((<WORD>)\.)"),
    (TagNames.HTTP_CONN_MANAGER_PREFIX, r"^listener\..*?\.http\.((<WORD>)\.)"),
    (TagNames.HTTP_CONN_MANAGER_PREFIX, r"^http\.((<WORD>)\.)"),
    (TagNames.LISTENER_ADDRESS, r"^listener\.((<ADDRESS>)\.)"),
    (TagNames.VIRTUAL_HOST, r"^vhost\.((<WORD>)\.)"),
    (TagNames.MONGO_PREFIX, r"^mongo\.((<WORD>)\.)"),
    (TagNames.RDS_ROUTE_CONFIG, r"^http\.<WORD>\.rds\.((<ROUTE_CONFIG_NAME>)\.)\w+?$"),
    (TagNames.REDIS_PREFIX, r"^redis\.((<WORD>)\.)"),
    (TagNames.CONNECTION_LIMIT_PREFIX, r"^connection_limit\.((<WORD>)\.)"),
    (TagNames.LOCAL_NETWORK_RATELIMIT_PREFIX, r"^local_rate_limit\.((<WORD>)\.)"),
    (TagNames.LOCAL_HTTP_RATELIMIT_PREFIX, r"^((<WORD>)\.)http_local_rate_limit\."),
    (TagNames.RBAC_PREFIX, r"^((<WORD>)\.)rbac\."),
    # Envoy 1.40 lifts the thread out of per-worker stats and keeps the
    # word "worker": listener.<addr>.worker_0.downstream_cx_total ->
    # listener.worker.downstream_cx_total{envoy_worker_id="0",...};
    # likewise server.worker_0.* and thread_local_cluster_manager.worker_0.*.
    (TagNames.WORKER_ID,
     r"^(?:listener\..*?|server|thread_local_cluster_manager)\.worker(_(\d+))\."),
]

_PREFIX_RE = re.compile(r"^\^([A-Za-z0-9_]+)(?:\\\.|\(\?=\\\.\))")


def regexPrefix(regex):
    """
    The literal first token of a regex anchored with C{^} and followed by
    a dot (C{^cluster\\.} -> C{"cluster"}), or C{""}; as Envoy's
    C{extractRegexPrefix}.
    """
    m = _PREFIX_RE.match(regex)
    return m.group(1) if m else ""


class TagExtractor:
    """
    One tag extractor: a tag name and a compiled regex.

    @ivar name: the tag name (C{envoy.cluster_name}).
    @ivar prefix: the first token a stat name must have for the regex to
        be tried, or C{""} to try it on every name.
    """

    def __init__(self, name, regex):
        self.name = name
        try:
            self._re = re.compile(regex)
        except re.error as e:
            raise ConfigError("Invalid regex '%s': %s" % (regex, e))
        if self._re.groups < 1:
            raise ConfigError(
                "No regex specified for tag specifier and no default regex for name: "
                "'%s'" % (name,))
        self.prefix = regexPrefix(regex)
        # Envoy takes the value from group 2 when there is one.
        self._valueGroup = 2 if self._re.groups >= 2 else 1

    def extract(self, statName):
        """
        @return: C{(value, (start, end))} with the span to remove, or
            C{None} when the name does not match.
        """
        m = self._re.search(statName)
        if m is None or m.group(1) is None:
            return None
        return m.group(self._valueGroup) or "", m.span(1)


def defaultExtractors():
    """Envoy's default tag extractors, in Envoy's order, compiled."""
    return [TagExtractor(name, _expand(regex)) for name, regex in _DEFAULTS]


class TagProducer:
    """
    Turns stat names into C{(tagExtractedName, tags)}; results are cached,
    so each distinct name runs the regexes once.

    @ivar fixedTags: C{((name, value), ...)} added to every stat first.
    """

    def __init__(self, extractors=None, fixedTags=()):
        if extractors is None:
            extractors = defaultExtractors()
        self.fixedTags = tuple(fixedTags)
        self._generic = []
        self._byPrefix = {}
        for extractor in extractors:
            if extractor.prefix:
                self._byPrefix.setdefault(extractor.prefix, []).append(extractor)
            else:
                self._generic.append(extractor)
        self._cache = {}
        self._lock = threading.Lock()

    @classmethod
    def fromStatsConfig(cls, statsConfig, cliTags=()):
        """
        Build from a bootstrap C{stats_config}
        (C{envoy.config.metrics.v3.StatsConfig}), as Envoy's
        C{TagProducerImpl}: the default extractors (unless
        C{use_all_default_tags} is false), then each C{stats_tags} entry with
        a C{regex}; entries with a C{fixed_value} (and C{--stats-tag}
        C{cliTags}) become tags on every stat.

        @raise ConfigError: for an invalid regex, or a tag name given twice.
        """
        useDefaults = True
        if statsConfig is not None and statsConfig.HasField("use_all_default_tags"):
            useDefaults = statsConfig.use_all_default_tags.value
        extractors = []
        names = set()
        if useDefaults:
            extractors = defaultExtractors()
            names = {name for name, _ in _DEFAULTS}
        fixed = list(cliTags)
        for spec in (statsConfig.stats_tags if statsConfig is not None else ()):
            if spec.tag_name in names:
                raise ConfigError("Tag name '%s' specified twice." % (spec.tag_name,))
            names.add(spec.tag_name)
            which = spec.WhichOneof("tag_value")
            if which == "fixed_value":
                fixed.append((spec.tag_name, spec.fixed_value))
            elif which == "regex":
                extractors.append(TagExtractor(spec.tag_name, spec.regex))
            else:
                defaults = [r for name, r in _DEFAULTS if name == spec.tag_name]
                if not defaults:
                    raise ConfigError(
                        "No regex specified for tag specifier and no default regex for "
                        "name: '%s'" % (spec.tag_name,))
                extractors.extend(TagExtractor(spec.tag_name, _expand(r)) for r in defaults)
        return cls(extractors, fixed)

    def produceTags(self, statName):
        """
        @return: C{(tagExtractedName, ((tagName, value), ...))}.
        """
        try:
            return self._cache[statName]
        except KeyError:
            pass
        result = self._produce(statName)
        with self._lock:
            self._cache[statName] = result
        return result

    def _produce(self, statName):
        tags = list(self.fixedTags)
        spans = []
        extractors = self._generic
        dot = statName.find(".")
        if dot > 0:
            bucket = self._byPrefix.get(statName[:dot])
            if bucket:
                extractors = extractors + bucket
        for extractor in extractors:
            found = extractor.extract(statName)
            if found is None:
                continue
            value, span = found
            tags.append((extractor.name, value))
            spans.append(span)
        if not spans:
            return statName, tuple(tags)
        return _removeSpans(statName, spans), tuple(tags)


def _removeSpans(name, spans):
    keep = [True] * len(name)
    for start, end in spans:
        for i in range(start, end):
            keep[i] = False
    return "".join(c for c, k in zip(name, keep) if k)


_default = None


def defaultTagProducer():
    """A shared L{TagProducer} with Envoy's default extractors."""
    global _default
    if _default is None:
        _default = TagProducer()
    return _default
