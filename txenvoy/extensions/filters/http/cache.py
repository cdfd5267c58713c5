# -*- test-case-name: tests.extensions.filters.http.test_cache -*-
"""
C{envoy.filters.http.cache} with C{envoy.extensions.http.cache.simple_http_cache}:
responses kept in memory and served again while fresh (RFC 9111 as
Envoy implements it).

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
C{tests/e2e/test_cache.py}):

 - a request is looked up when it is a C{GET} or C{HEAD} with a path and a
   host, no C{authorization} and no conditional header (C{if-match},
   C{if-none-match}, C{if-modified-since}, C{if-unmodified-since},
   C{if-range}); the key is its scheme, host and path with query;
 - a response is kept when the request was looked up, its status is one
   of 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 451, 501, its
   C{cache-control} has no C{no-store} or C{private}, it says how long it
   stays fresh (C{max-age}, C{s-maxage}, C{no-cache}, or C{expires} with
   C{date}), and every header its C{vary} names is allowed by
   C{allowed_vary_headers} (the key then includes their values);
 - a kept response is served with its headers as they were and C{age}
   (its age when stored, the larger of its C{age} and C{date}'s lag, plus
   the time it has been kept) while fresh: its age is within
   C{s-maxage}, C{max-age} or C{expires - date}, and neither it nor the
   request says C{no-cache} (the request's C{max-age}, C{min-fresh} and
   C{max-stale} count unless C{ignore_request_cache_control_header});
 - a stale one (or one without C{date}) is validated: the request goes
   on with C{if-none-match} (its C{etag}) and C{if-modified-since} (its
   C{last-modified}, else its C{date}, else empty); a C{304} answer serves the kept response with the 304's
   headers merged in, and keeps them; any other answer goes to the client
   (and is kept when it may be).
"""

import email.utils

from zope.interface import implementer

from envoy.extensions.filters.http.cache.v3 import cache_pb2  # noqa: F401
from envoy.extensions.http.cache.simple_http_cache.v3 import config_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError, UnsupportedExtension
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension, typeNameOf
from txenvoy.http.filter import (
    ConfiguredFilter,
    FilterDataStatus,
    FilterHeadersStatus,
    PassThroughFilter,
)
from txenvoy.http.headers import HeaderMap, ResponseHeaders
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter, IStreamEncoderFilter
from txenvoy.router.matcher import compileStringMatcher

__all__ = ["CacheConfig", "CacheFilter", "SimpleHttpCache", "createCache"]

_NAME = "envoy.filters.http.cache"
_CONFIG = "envoy.extensions.filters.http.cache.v3.CacheConfig"
_SIMPLE = "envoy.extensions.http.cache.simple_http_cache.v3.SimpleHttpCacheConfig"

_CACHEABLE_STATUS = frozenset([200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 451, 501])
_CONDITIONAL = (b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since",
                b"if-range")
#: Headers of a 304 that do not replace the kept response's.
_NOT_UPDATED = frozenset([b"content-range", b"content-length", b"etag", b"vary"])


def _seconds(value):
    try:
        n = int(value)
    except ValueError:
        return None
    return max(n, 0)


class _CacheControl:
    """A parsed C{cache-control} (Envoy's Request/ResponseCacheControl)."""

    __slots__ = ("noCache", "noStore", "noStale", "maxAge", "minFresh", "maxStale")

    def __init__(self, value, response):
        self.noCache = self.noStore = self.noStale = False
        self.maxAge = self.minFresh = self.maxStale = None
        sMaxAge = None
        for part in (value or b"").split(b","):
            name, _, arg = part.strip().partition(b"=")
            name = name.strip().lower()
            arg = arg.strip().strip(b'"')
            if name == b"no-cache":
                self.noCache = True
            elif name == b"no-store" or (response and name == b"private"):
                self.noStore = True
            elif name in (b"must-revalidate", b"proxy-revalidate"):
                self.noStale = True
            elif name == b"max-age":
                self.maxAge = _seconds(arg)
            elif name == b"s-maxage" and response:
                sMaxAge = _seconds(arg)
            elif name == b"min-fresh":
                self.minFresh = _seconds(arg)
            elif name == b"max-stale":
                # No value: any staleness.
                self.maxStale = _seconds(arg) if arg else 1 << 62
        if sMaxAge is not None:
            self.maxAge = sMaxAge


def _httpDate(value):
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value.decode("latin-1"))
    except (TypeError, ValueError):
        return None
    return email.utils.mktime_tz(parsed) if parsed else None


def _single(headers, name):
    values = headers.getAll(name)
    return b",".join(values) if values else None


class _Entry:
    """One kept response: its head, body, when it came, and its vary names."""

    __slots__ = ("status", "headers", "body", "responseTime", "vary")

    def __init__(self, status, headers, body, responseTime, vary):
        self.status = status
        self.headers = headers
        self.body = body
        self.responseTime = responseTime
        self.vary = vary

    def age(self, now):
        """
        Envoy's C{calculateAge}: whole seconds, truncated once from the
        exact sum (the response's apparent age has its time's precision).
        """
        headers = self.headers
        date = _httpDate(headers.get(b"date"))
        apparent = max(0.0, self.responseTime - date) if date is not None else 0.0
        stated = _seconds(headers.get(b"age") or b"0") or 0
        return int(max(apparent, stated) + (now - self.responseTime))

    def freshness(self):
        """Seconds this response stays fresh."""
        control = _CacheControl(_single(self.headers, b"cache-control"), True)
        if control.maxAge is not None:
            return control.maxAge
        expires = _httpDate(self.headers.get(b"expires"))
        date = _httpDate(self.headers.get(b"date"))
        if expires is None or date is None:
            return 0
        return int(expires - date)


class SimpleHttpCache:
    """
    The in-memory cache (Envoy's C{SimpleHttpCache}): C{{key: {vary
    names: {vary values: entry}}}}, shared by every worker of the filter.
    """

    def __init__(self):
        self._entries = {}

    def lookup(self, key, request):
        variants = self._entries.get(key)
        if not variants:
            return None
        for names, byValues in variants.items():
            entry = byValues.get(_varyValues(request, names))
            if entry is not None:
                return entry
        return None

    def insert(self, key, request, entry):
        variants = self._entries.setdefault(key, {})
        # A response with other vary names replaces the old ones.
        for names in list(variants):
            if names != entry.vary:
                del variants[names]
        variants.setdefault(entry.vary, {})[_varyValues(request, entry.vary)] = entry


def _varyValues(request, names):
    return tuple(b",".join(request.headers.getAll(name)) for name in names)


@implementer(IHttpFilterFactory)
class CacheConfig:
    """A compiled C{CacheConfig}; the filter factory."""

    terminal = False

    def __init__(self, cache, allowedVary, ignoreRequestCacheControl, excludeScheme,
                 excludeHost, maxBodyBytes):
        self.cache = cache
        self.allowedVary = allowedVary
        self.ignoreRequestCacheControl = ignoreRequestCacheControl
        self.excludeScheme = excludeScheme
        self.excludeHost = excludeHost
        self.maxBodyBytes = maxBodyBytes

    def createFilter(self, callbacks):
        """@return: a L{CacheFilter}."""
        return CacheFilter(self, callbacks)

    def varyAllowed(self, names):
        for name in names:
            if name == b"*":
                return False
            if not any(match(name) for match in self.allowedVary):
                return False
        return True


def _varyNames(headers):
    names = []
    for value in headers.getAll(b"vary"):
        for name in value.split(b","):
            name = name.strip().lower()
            if name:
                names.append(name)
    return tuple(sorted(set(names)))


@implementer(IStreamDecoderFilter, IStreamEncoderFilter)
class CacheFilter(ConfiguredFilter):
    """The cache filter of one stream."""

    _key = None          # the request's cache key, when it was looked up
    _request = None
    _validating = None   # the stale entry being validated
    _serving = False     # our own response is on its way out
    _recording = None    # [ResponseHeaders, chunks, size, responseTime] of a response to keep

    def _now(self):
        return self.callbacks.dispatcher.reactor.seconds()

    def decodeHeaders(self, headers, endStream):
        entries = headers.headers
        if (headers.method not in (b"GET", b"HEAD") or headers.path is None
                or not headers.authority or b"authorization" in entries
                or any(name in entries for name in _CONDITIONAL)):
            return FilterHeadersStatus.Continue
        config = self.config
        scheme = headers.scheme or entries.get(b"x-forwarded-proto") or b"http"
        self._key = (b"" if config.excludeScheme else scheme,
                     b"" if config.excludeHost else headers.authority, headers.path)
        self._request = headers
        entry = config.cache.lookup(self._key, headers)
        if entry is None:
            return FilterHeadersStatus.Continue
        now = self._now()
        age = entry.age(now)
        if self._requiresValidation(entry, age, headers):
            self._validating = entry
            etag = entry.headers.get(b"etag")
            if etag is not None:
                entries.set(b"if-none-match", etag)
            # Envoy sends the header even with nothing to put in it.
            modified = (entry.headers.get(b"last-modified") or entry.headers.get(b"date")
                        or b"")
            entries.set(b"if-modified-since", modified)
            return FilterHeadersStatus.Continue
        self._serve(entry, age, headers.method == b"HEAD")
        return FilterHeadersStatus.StopIteration

    def _requiresValidation(self, entry, age, request):
        response = _CacheControl(_single(entry.headers, b"cache-control"), True)
        if self.config.ignoreRequestCacheControl:
            wanted = _CacheControl(None, False)
        else:
            wanted = _CacheControl(_single(request.headers, b"cache-control"), False)
            if wanted.noCache is False and request.headers.get(b"pragma") == b"no-cache" \
                    and b"cache-control" not in request.headers:
                wanted.noCache = True
        if response.noCache or wanted.noCache:
            return True
        if _httpDate(entry.headers.get(b"date")) is None:
            # Envoy 1.40 keeps a response without a date, then validates it.
            return True
        if wanted.maxAge is not None and wanted.maxAge < age:
            return True
        freshness = entry.freshness()
        staleness = age - freshness
        if wanted.minFresh is not None and freshness - age < wanted.minFresh:
            return True
        if staleness <= 0:
            return False
        allowedStale = (wanted.maxStale is not None and not response.noStale
                        and staleness <= wanted.maxStale)
        return not allowedStale

    def _serve(self, entry, age, headOnly):
        """Send a kept response to the client, with its C{age}."""
        head = ResponseHeaders(entry.status, HeaderMap(list(entry.headers.items())))
        head.headers.set(b"age", b"%d" % (age,))
        self._serving = True
        callbacks = self.callbacks
        if headOnly or not entry.body:
            callbacks.encodeHeaders(head, True)
        else:
            callbacks.encodeHeaders(head, False)
            callbacks.encodeData(entry.body, True)

    # The response.

    def encodeHeaders(self, headers, endStream):
        if self._serving or self._key is None:
            return FilterHeadersStatus.Continue
        entry = self._validating
        if entry is not None:
            self._validating = None
            if headers.status == 304:
                return self._validated(entry, headers)
        if self._request.method != b"GET":
            return FilterHeadersStatus.Continue
        response = headers.headers
        control = _CacheControl(_single(response, b"cache-control"), True)
        hasFreshness = (control.noCache or control.maxAge is not None
                        or (b"date" in response and b"expires" in response))
        vary = _varyNames(response)
        if (headers.status in _CACHEABLE_STATUS and not control.noStore and hasFreshness
                and self.config.varyAllowed(vary)):
            recorded = ResponseHeaders(headers.status, HeaderMap(list(response.items())))
            self._recording = [recorded, [], 0, self._now(), vary]
            if endStream:
                self._insert()
        return FilterHeadersStatus.Continue

    def encodeData(self, data, endStream):
        recording = self._recording
        if recording is not None:
            recording[1].append(data)
            recording[2] += len(data)
            limit = self.config.maxBodyBytes
            if limit and recording[2] > limit:
                self._recording = None
            elif endStream:
                self._insert()
        return FilterDataStatus.Continue

    def encodeTrailers(self, trailers):
        # Envoy's simple cache keeps no trailers: the response is not kept.
        self._recording = None
        return PassThroughFilter.encodeTrailers(self, trailers)

    def _insert(self):
        head, chunks, _, responseTime, vary = self._recording
        self._recording = None
        self.config.cache.insert(self._key, self._request,
                                 _Entry(head.status, head.headers, b"".join(chunks),
                                        responseTime, vary))

    def _validated(self, entry, notModified):
        """
        A 304 for a stale entry (Envoy's C{processSuccessfulValidation}):
        the 304's head becomes the response, with the kept status and
        C{content-length} and the kept headers it lacks, then the kept body.
        The kept entry takes the 304's headers and a new response time.
        """
        kept = HeaderMap(list(entry.headers.items()))
        for name, _ in notModified.headers.items():
            if name not in _NOT_UPDATED:
                kept.remove(name)
        for name, value in notModified.headers.items():
            if name not in _NOT_UPDATED:
                kept.add(name, value)
        now = self._now()
        self.config.cache.insert(self._key, self._request,
                                 _Entry(entry.status, kept, entry.body, now, entry.vary))
        head = notModified.headers
        notModified.status = entry.status
        length = entry.headers.get(b"content-length")
        if length is not None:
            head.set(b"content-length", length)
        for name, value in entry.headers.items():
            if name not in head:
                head.add(name, value)
        self._serving = True
        callbacks = self.callbacks
        if self._request.method == b"HEAD" or not entry.body:
            callbacks.encodeHeaders(notModified, True)
        else:
            callbacks.encodeHeaders(notModified, False)
            callbacks.encodeData(entry.body, True)
        return FilterHeadersStatus.StopIteration


_FIELDS = ("typed_config", "disabled", "allowed_vary_headers", "key_creator_params",
           "max_body_bytes", "ignore_request_cache_control_header")


@extension(Category.HTTP_FILTER, _CONFIG, _NAME, fields=_FIELDS)
def createCache(message, context):
    """Compile a C{CacheConfig} with the simple HTTP cache."""
    path = context.path + ".typed_config"
    if not message.HasField("typed_config"):
        raise ConfigError("%s.typed_config: Proto constraint validation failed "
                          "(CacheConfigValidationError.TypedConfig: value is required)" % (path,))
    typeName = typeNameOf(message.typed_config)
    if typeName != _SIMPLE:
        raise UnsupportedExtension(path + ".typed_config", typeName, "")
    if message.HasField("disabled") and message.disabled.value:
        return _Disabled()
    params = message.key_creator_params
    checkFields(params, ("exclude_scheme", "exclude_host"), path + ".key_creator_params")
    allowed = tuple(compileStringMatcher(m, "%s.allowed_vary_headers[%d]" % (path, i))
                    for i, m in enumerate(message.allowed_vary_headers))
    return CacheConfig(SimpleHttpCache(), allowed, message.ignore_request_cache_control_header,
                       params.exclude_scheme, params.exclude_host, message.max_body_bytes)


@implementer(IHttpFilterFactory)
class _Disabled:
    """C{disabled: true}: the filter does nothing."""

    terminal = False

    def createFilter(self, callbacks):
        return PassThroughFilter(callbacks)
