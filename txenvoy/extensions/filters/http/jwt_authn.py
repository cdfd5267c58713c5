# -*- test-case-name: tests.extensions.filters.http.test_jwt_authn -*-
"""
C{envoy.filters.http.jwt_authn}: requests must carry JSON Web Tokens that
the configured providers verify, as the route's requirement says.

Behaviour copied from Envoy 1.40 (checked against the binary, pinned in
C{tests/extensions/filters/http/test_jwt_authn.py} and
C{tests/e2e/test_jwt_authn.py}):

 - the first of C{rules} whose C{match} holds (or the route's
   C{PerRouteConfig.requirement_name} in C{requirement_map}) gives the
   requirement: a provider (with C{provider_and_audiences} its audiences
   replaced), C{requires_any}, C{requires_all}, C{allow_missing},
   C{allow_missing_or_failed}; no rule, no check;
 - a provider reads its tokens from C{from_headers} (with C{value_prefix},
   case-sensitive), C{from_params} and C{from_cookies}, by default from
   C{Authorization: Bearer} and the C{access_token} parameter; a token
   must parse, have the provider's C{iss}, be valid now (C{nbf},
   C{exp}, C{clock_skew_seconds} 60 by default), have one of its
   C{audiences}, and be signed by a key of its JWKS (C{local_jwks}, or
   C{remote_jwks} fetched through its cluster and kept
   C{cache_duration}, 5 minutes by default, per worker);
 - in C{requires_any} the first error that is not a missing token wins;
   C{requires_all} fails with the first failure in order;
 - a verified token is removed from its header (or its query parameter,
   the query written back as Envoy writes it) unless C{forward}, its
   payload goes in C{forward_payload_header}, its claims in
   C{claim_to_headers} (dotted paths; strings, numbers, booleans), and
   with C{payload_in_metadata} in the dynamic metadata;
 - a refusal answers 401 (403 for C{Audiences in Jwt are not allowed})
   with Envoy's message as the body and
   C{www-authenticate: Bearer realm="<scheme>://<host><path and query>"}, plus
   C{, error="invalid_token"} unless the token was missing; details
   C{jwt_authn_access_denied{<message>}};
 - C{bypass_cors_preflight} lets CORS preflights through;
 - a route whose C{PerRouteConfig} is C{disabled} is not checked (and
   counted as allowed, as Envoy counts it).

Stats: C{http.<prefix>.jwt_authn.[<stat_prefix>.]} C{allowed}, C{denied},
C{cors_preflight_bypassed}, C{jwks_fetch_success}, C{jwks_fetch_failed},
C{jwt_cache_hit}, C{jwt_cache_miss}.
"""

import json
from urllib.parse import unquote, urlsplit

from zope.interface import implementer

from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2  # noqa: F401

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.filters.http._jwt import Jwt, JwtError, Status, parseJwks
from txenvoy.http.async_client import AsyncHttpClient
from txenvoy.http.filter import ConfiguredFilter, FilterHeadersStatus
from txenvoy.http.filter_config import RouteSpecificConfigs, WorkerStats, httpStatPrefix
from txenvoy.http.headers import HeaderMap, RequestHeaders
from txenvoy.interfaces import IHttpFilterFactory, IStreamDecoderFilter
from txenvoy.router.config import RouteTable
from txenvoy.router.matcher import parseQueryParameters
from txenvoy.stats.per_worker import PerWorker

__all__ = ["JwtAuthnConfig", "JwtAuthnFilter", "createJwtAuthn"]

_NAME = "envoy.filters.http.jwt_authn"
_JWT_AUTHN = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
_PER_ROUTE = "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"
_COUNTERS = ("allowed", "denied", "cors_preflight_bypassed", "jwks_fetch_success",
             "jwks_fetch_failed", "jwt_cache_hit", "jwt_cache_miss")
_DEFAULT_CACHE_SECONDS = 300

# Where a token was found.
_HEADER, _PARAM, _COOKIE = range(3)


# -- providers ----------------------------------------------------------------------


class _RemoteJwks:
    """Where a provider fetches its key set from."""

    def __init__(self, message, path):
        checkFields(message, ("http_uri", "cache_duration"), path)
        uri = message.http_uri
        checkFields(uri, ("uri", "cluster", "timeout"), path + ".http_uri")
        parts = urlsplit(uri.uri)
        if not parts.netloc:
            raise ConfigError("%s.http_uri.uri: '%s' is not a valid URI" % (path, uri.uri))
        self.cluster = uri.cluster
        self.host = parts.netloc.encode("utf-8")
        self.path = ((parts.path or "/") + ("?" + parts.query if parts.query else "")).encode(
            "utf-8")
        self.timeout = (uri.timeout.seconds + uri.timeout.nanos / 1e9) or None
        duration = message.cache_duration
        self.cacheSeconds = (duration.seconds + duration.nanos / 1e9
                             if message.HasField("cache_duration") else _DEFAULT_CACHE_SECONDS)


class _Provider:
    """A compiled C{JwtProvider}."""

    _FIELDS = ("issuer", "audiences", "remote_jwks", "local_jwks", "forward", "from_headers",
               "from_params", "from_cookies", "forward_payload_header",
               "pad_forward_payload_header", "payload_in_metadata", "clock_skew_seconds",
               "claim_to_headers", "require_expiration")

    def __init__(self, name, message, path):
        checkFields(message, self._FIELDS, path)
        self.name = name
        self.issuer = message.issuer
        self.audiences = frozenset(message.audiences)
        self.forward = message.forward
        self.payloadHeader = message.forward_payload_header.lower().encode("latin-1") or None
        self.padPayload = message.pad_forward_payload_header
        self.payloadInMetadata = message.payload_in_metadata or None
        self.requireExpiration = message.require_expiration
        self.clockSkew = (message.clock_skew_seconds if message.clock_skew_seconds else 60)
        self.claimToHeaders = tuple(
            (c.header_name.lower().encode("latin-1"), c.claim_name.split("."))
            for c in message.claim_to_headers)
        self.headers = tuple((h.name.lower().encode("latin-1"), h.value_prefix.encode("latin-1"))
                             for h in message.from_headers)
        self.params = tuple(p.encode("utf-8") for p in message.from_params)
        self.cookies = tuple(c.encode("utf-8") for c in message.from_cookies)
        if not (self.headers or self.params or self.cookies):
            self.headers = ((b"authorization", b"Bearer "),)
            self.params = (b"access_token",)
        self.localJwks = None
        self.remote = None
        which = message.WhichOneof("jwks_source_specifier")
        if which == "local_jwks":
            source = message.local_jwks
            checkFields(source, ("inline_string", "filename", "inline_bytes"),
                        path + ".local_jwks")
            kind = source.WhichOneof("specifier")
            if kind == "filename":
                with open(source.filename, "rb") as f:
                    text = f.read().decode("utf-8")
            elif kind == "inline_bytes":
                text = source.inline_bytes.decode("utf-8")
            else:
                text = source.inline_string
            try:
                self.localJwks = parseJwks(text)
            except ValueError as e:
                raise ConfigError("%s.local_jwks: Provider '%s' in jwt_authn config has "
                                  "invalid local jwks: %s" % (path, name, e))
        elif which == "remote_jwks":
            self.remote = _RemoteJwks(message.remote_jwks, path + ".remote_jwks")
        else:
            raise ConfigError("%s: Proto constraint validation failed (JwtProviderValidationError."
                              "JwksSourceSpecifier: value is required)" % (path,))

    def extract(self, headers):
        """The tokens of this provider's locations, with the headers they came in."""
        found = []
        entries = headers.headers
        for name, prefix in self.headers:
            values = entries.getAll(name)
            if not values:
                continue
            # The codec joins repeated headers, as Envoy's does.
            value = b",".join(values)
            if prefix:
                if not value.startswith(prefix):
                    continue
                value = value[len(prefix):]
            if value:
                found.append((value.decode("latin-1"), (_HEADER, name)))
        if self.params and headers.path and b"?" in headers.path:
            query = parseQueryParameters(headers.path)
            for name in self.params:
                value = query.get(name)
                if value:
                    found.append((unquote(value.decode("latin-1")), (_PARAM, name)))
        if self.cookies:
            for header in entries.getAll(b"cookie"):
                for part in header.split(b";"):
                    key, eq, value = part.strip().partition(b"=")
                    if eq and key in self.cookies and value:
                        found.append((value.decode("latin-1"), (_COOKIE, key)))
        return found


# -- requirements ---------------------------------------------------------------------


class _Check:
    """What one request found: tokens per provider, results, actions."""

    def __init__(self, filter_, headers):
        self.filter = filter_
        self.headers = headers
        self.results = {}
        self.verified = []


def _providerResult(check, provider, audiences):
    key = (provider.name, audiences)
    result = check.results.get(key)
    if result is None:
        result = check.results[key] = check.filter.verifyProvider(provider, audiences)
    return result


class _ProviderRequirement:
    def __init__(self, provider, audiences=None):
        self.provider = provider
        self.audiences = audiences

    def providers(self):
        return [self.provider]

    def evaluate(self, check):
        status, _ = _providerResult(check, self.provider, self.audiences)
        return status


class _AnyRequirement:
    def __init__(self, children, allowMissing, allowFailed):
        self.children = children
        self.allowMissing = allowMissing
        self.allowFailed = allowFailed

    def providers(self):
        return [p for c in self.children for p in c.providers()]

    def evaluate(self, check):
        statuses = [child.evaluate(check) for child in self.children]
        if Status.Ok in statuses:
            return Status.Ok
        if self.allowFailed:
            return Status.Ok
        final = Status.JwtMissed
        for status in statuses:
            if status != Status.JwtMissed:
                final = status
                break
        if final == Status.JwtMissed and self.allowMissing:
            return Status.Ok
        return final


class _AllRequirement:
    def __init__(self, children):
        self.children = children

    def providers(self):
        return [p for c in self.children for p in c.providers()]

    def evaluate(self, check):
        statuses = [child.evaluate(check) for child in self.children]
        for status in statuses:
            if status != Status.Ok:
                return status
        return Status.Ok


class _AllowRequirement:
    """C{allow_missing} or C{allow_missing_or_failed} on their own."""

    def __init__(self, missing):
        self.missing = missing

    def providers(self):
        return []

    def evaluate(self, check):
        return Status.JwtMissed if self.missing else Status.Ok


def _compileRequirement(message, providers, path):
    checkFields(message, ("provider_name", "provider_and_audiences", "requires_any",
                          "requires_all", "allow_missing_or_failed", "allow_missing"), path)
    which = message.WhichOneof("requires_type")
    if which == "provider_name":
        return _ProviderRequirement(_lookupProvider(providers, message.provider_name,
                                                    path + ".provider_name"))
    if which == "provider_and_audiences":
        pa = message.provider_and_audiences
        return _ProviderRequirement(
            _lookupProvider(providers, pa.provider_name, path + ".provider_and_audiences"),
            frozenset(pa.audiences))
    if which in ("requires_any", "requires_all"):
        children = []
        allowMissing = allowFailed = False
        for i, child in enumerate(getattr(message, which).requirements):
            childWhich = child.WhichOneof("requires_type")
            if which == "requires_any" and childWhich == "allow_missing":
                allowMissing = True
                continue
            if which == "requires_any" and childWhich == "allow_missing_or_failed":
                allowFailed = True
                continue
            children.append(_compileRequirement(child, providers, "%s.%s.requirements[%d]" % (
                path, which, i)))
        if which == "requires_all":
            return _AllRequirement(children)
        return _AnyRequirement(children, allowMissing, allowFailed)
    if which == "allow_missing":
        return _AllowRequirement(missing=True)
    if which == "allow_missing_or_failed":
        return _AllowRequirement(missing=False)
    return None


def _lookupProvider(providers, name, path):
    provider = providers.get(name)
    if provider is None:
        raise ConfigError("%s: Wrong requirement config: provider '%s' is not found" % (
            path, name))
    return provider


class _PerRoute:
    __slots__ = ("disabled", "requirementName")

    def __init__(self, disabled=False, requirementName=None):
        self.disabled = disabled
        self.requirementName = requirementName


def compilePerRoute(message):
    """Compile a C{PerRouteConfig}."""
    which = message.WhichOneof("requirement_specifier")
    if which == "disabled":
        return _PerRoute(disabled=message.disabled)
    if which == "requirement_name":
        return _PerRoute(requirementName=message.requirement_name)
    raise ConfigError("typed_per_filter_config[%s]: Proto constraint validation failed "
                      "(PerRouteConfigValidationError.RequirementSpecifier: value is required)"
                      % (_NAME,))


# -- the key sets of a worker -----------------------------------------------------------


class _WorkerJwks:
    """
    The remote key sets of one worker: fetched when a token needs them,
    kept C{cache_duration}, one fetch at a time per provider.
    """

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.client = AsyncHttpClient(dispatcher)
        self.cached = {}
        self.waiting = {}

    def get(self, provider):
        entry = self.cached.get(provider.name)
        if entry is not None and entry[1] > self.dispatcher.reactor.seconds():
            return entry[0]
        return None

    def fetch(self, provider, stats, done):
        waiters = self.waiting.get(provider.name)
        if waiters is not None:
            waiters.append(done)
            return
        self.waiting[provider.name] = [done]
        remote = provider.remote
        request = RequestHeaders(b"GET", remote.path, remote.host, headers=HeaderMap())
        self.client.send(remote.cluster, request, b"", remote.timeout,
                         _JwksFetch(self, provider, stats))

    def finish(self, provider, jwks):
        if jwks is not None:
            expires = self.dispatcher.reactor.seconds() + provider.remote.cacheSeconds
            self.cached[provider.name] = (jwks, expires)
        for done in self.waiting.pop(provider.name, ()):
            done()


class _JwksFetch:
    """The outcome of one JWKS fetch."""

    def __init__(self, worker, provider, stats):
        self.worker = worker
        self.provider = provider
        self.stats = stats

    def onSuccess(self, response, body):
        jwks = None
        if response.status == 200:
            try:
                jwks = parseJwks(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                jwks = None
        (self.stats.jwks_fetch_success if jwks is not None else
         self.stats.jwks_fetch_failed).inc()
        self.worker.finish(self.provider, jwks)

    def onFailure(self, reason):
        self.stats.jwks_fetch_failed.inc()
        self.worker.finish(self.provider, None)


# -- the filter ----------------------------------------------------------------------


@implementer(IHttpFilterFactory)
class JwtAuthnConfig:
    """A compiled C{JwtAuthentication}; the filter factory."""

    terminal = False

    def __init__(self, providers, rules, rulesTable, requirementMap, bypassCors, statPrefix):
        self.providers = providers
        self.rules = rules
        self.rulesTable = rulesTable
        self.requirementMap = requirementMap
        self.bypassCors = bypassCors
        self.stats = WorkerStats({name: statPrefix + name for name in _COUNTERS})
        self.routeConfigs = RouteSpecificConfigs(_NAME, (_PER_ROUTE,), compilePerRoute)
        self.jwks = PerWorker(_WorkerJwks)

    def createFilter(self, callbacks):
        """@return: a L{JwtAuthnFilter} for one request."""
        return JwtAuthnFilter(self, callbacks)

    def requirementFor(self, headers):
        """The first matching rule's requirement, or C{None}."""
        if self.rulesTable is None:
            return None
        match = self.rulesTable.route(headers.authority, headers.path or b"/", headers.headers,
                                      headers.method)
        if match is None:
            return None
        return self.rules[int(match.entry.name)]


@implementer(IStreamDecoderFilter)
class JwtAuthnFilter(ConfiguredFilter):
    """The jwt_authn filter of one request (request direction only)."""

    _check = None
    _requirement = None
    _waiting = 0
    _inCall = False
    _done = False

    def decodeHeaders(self, headers, endStream):
        config = self.config
        callbacks = self.callbacks
        perRoute = config.routeConfigs.mostSpecific(callbacks)
        stats = self.stats = config.stats.forDispatcher(callbacks.dispatcher)
        if perRoute is not None and perRoute.disabled:
            # Envoy 1.40 counts a request of a disabled route as allowed.
            stats.allowed.inc()
            return FilterHeadersStatus.Continue
        entries = headers.headers
        if (config.bypassCors and headers.method == b"OPTIONS"
                and entries.get(b"origin") is not None
                and entries.get(b"access-control-request-method") is not None):
            stats.cors_preflight_bypassed.inc()
            return FilterHeadersStatus.Continue
        if perRoute is not None and perRoute.requirementName is not None:
            requirement = config.requirementMap.get(perRoute.requirementName)
        else:
            requirement = config.requirementFor(headers)
        if requirement is None:
            stats.allowed.inc()
            return FilterHeadersStatus.Continue
        self._requirement = requirement
        self._check = _Check(self, headers)
        # Remote key sets first (Envoy fetches when a token needs them).
        worker = config.jwks.get(callbacks.dispatcher)
        needed = []
        for provider in requirement.providers():
            if provider.remote is not None and provider not in needed \
                    and worker.get(provider) is None and provider.extract(headers):
                needed.append(provider)
        if needed:
            self._waiting = len(needed)
            self._inCall = True
            for provider in needed:
                worker.fetch(provider, stats, self._onJwks)
            self._inCall = False
            if self._waiting:
                return FilterHeadersStatus.StopAllIterationAndWatermark
        return (FilterHeadersStatus.Continue if self._finish()
                else FilterHeadersStatus.StopAllIterationAndWatermark)

    def onDestroy(self):
        self._done = True

    def _onJwks(self):
        self._waiting -= 1
        if self._waiting or self._inCall or self._done:
            return
        if self._finish():
            self.callbacks.continueDecoding()

    def _finish(self):
        """Decide; C{True} when the request goes on."""
        check = self._check
        status = self._requirement.evaluate(check)
        stats = self.stats
        if status == Status.Ok:
            stats.allowed.inc()
            for provider, jwt, header in check.verified:
                self._onVerified(provider, jwt, header)
            return True
        stats.denied.inc()
        self._deny(status)
        return False

    # Verification.

    def verifyProvider(self, provider, audiences):
        """C{(status, verified)} for the tokens of one provider's locations."""
        check = self._check
        tokens = provider.extract(check.headers)
        if not tokens:
            return Status.JwtMissed, ()
        verified = []
        for token, header in tokens:
            # Envoy looks every token up in its (here absent) cache first.
            self.stats.jwt_cache_miss.inc()
            try:
                jwt = Jwt(token)
                self._verify(provider, audiences, jwt)
            except JwtError as e:
                return e.status, ()
            verified.append((provider, jwt, header))
        check.verified.extend(verified)
        return Status.Ok, verified

    def _verify(self, provider, audiences, jwt):
        if provider.issuer and jwt.issuer != provider.issuer:
            raise JwtError(Status.JwtUnknownIssuer)
        # The worker's reactor tells the time (the wall clock, in a server).
        jwt.checkTime(int(self.callbacks.dispatcher.reactor.seconds()), provider.clockSkew,
                      provider.requireExpiration)
        allowed = audiences if audiences is not None else provider.audiences
        if allowed and not allowed.intersection(jwt.audiences):
            raise JwtError(Status.JwtAudienceNotAllowed)
        jwks = provider.localJwks
        if jwks is None:
            jwks = self.config.jwks.get(self.callbacks.dispatcher).get(provider)
            if jwks is None:
                raise JwtError(Status.JwksFetchFail)
        jwks.verify(jwt)

    def _onVerified(self, provider, jwt, location):
        headers = self._check.headers
        entries = headers.headers
        if not provider.forward:
            kind, name = location
            if kind == _HEADER:
                entries.remove(name)
            elif kind == _PARAM:
                headers.path = _withoutParam(headers.path, name)
        if provider.payloadHeader is not None:
            segment = jwt.payloadSegment
            if provider.padPayload:
                segment += "=" * (-len(segment) % 4)
            # Envoy 1.40 drops what the client sent and adds its own at the end.
            entries.remove(provider.payloadHeader)
            entries.add(provider.payloadHeader, segment.encode("latin-1"))
        for name, claimPath in provider.claimToHeaders:
            value = _claim(jwt.payload, claimPath)
            if value is not None:
                entries.remove(name)
                entries.add(name, value)
        if provider.payloadInMetadata is not None:
            metadata = self.callbacks.streamInfo.dynamicMetadata.setdefault(_NAME, {})
            metadata[provider.payloadInMetadata] = jwt.payload

    def _deny(self, status):
        code, message = status
        headers = self._check.headers
        scheme = headers.headers.get(b"x-forwarded-proto") or headers.scheme or b"http"
        path = headers.path or b"/"
        challenge = b'Bearer realm="%s://%s%s"' % (scheme, headers.authority or b"", path)
        if status != Status.JwtMissed:
            challenge += b', error="invalid_token"'

        def addChallenge(head):
            head.headers.add(b"www-authenticate", challenge)

        self.callbacks.sendLocalReply(code, message.encode("utf-8"), addChallenge,
                                      "jwt_authn_access_denied{%s}" % (message.replace(" ", "_"),))


def _withoutParam(path, name):
    """
    The path with every C{name} query parameter removed, the rest written
    back as Envoy writes a query (C{b} becomes C{b=}; no C{?} when empty).
    """
    base, _, query = path.partition(b"?")
    kept = []
    for part in query.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        if key != name:
            kept.append(key + b"=" + value)
    return base + b"?" + b"&".join(kept) if kept else base


def _claim(payload, path):
    value = payload
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, float)):
        return json.dumps(value).encode("ascii")
    return None


# -- the config ---------------------------------------------------------------------------


def _rulesTable(rules, path):
    """
    The rules' C{match}es as a route table (one virtual host), so they
    match exactly as routes do; each route's name is its rule's index.
    """
    if not rules:
        return None
    config = route_pb2.RouteConfiguration()
    vhost = config.virtual_hosts.add(name="rules", domains=["*"])
    for i, rule in enumerate(rules):
        route = vhost.routes.add(name=str(i))
        route.match.CopyFrom(rule.match)
        route.direct_response.status = 200
    return RouteTable.fromProto(config, path)


@extension(Category.HTTP_FILTER, _JWT_AUTHN, _NAME,
           fields=("providers", "rules", "bypass_cors_preflight", "requirement_map",
                   "stat_prefix"))
def createJwtAuthn(message, context):
    """Compile a C{JwtAuthentication} message."""
    path = context.path + ".typed_config"
    providers = {name: _Provider(name, p, "%s.providers[%s]" % (path, name))
                 for name, p in sorted(message.providers.items())}
    rules = []
    for i, rule in enumerate(message.rules):
        rulePath = "%s.rules[%d]" % (path, i)
        checkFields(rule, ("match", "requires", "requirement_name"), rulePath)
        if rule.HasField("requires"):
            requirement = _compileRequirement(rule.requires, providers, rulePath + ".requires")
        elif rule.requirement_name:
            if rule.requirement_name not in message.requirement_map:
                raise ConfigError("%s.requirement_name: Wrong requirement_name: %s. It should "
                                  "be one of [requirement_map]" % (rulePath, rule.requirement_name))
            requirement = _compileRequirement(message.requirement_map[rule.requirement_name],
                                              providers, "%s.requirement_map[%s]" % (
                                                  path, rule.requirement_name))
        else:
            requirement = None
        rules.append(requirement)
    requirementMap = {
        name: _compileRequirement(r, providers, "%s.requirement_map[%s]" % (path, name))
        for name, r in message.requirement_map.items()}
    prefix = httpStatPrefix(context) + "jwt_authn."
    if message.stat_prefix:
        prefix += message.stat_prefix + "."
    config = JwtAuthnConfig(providers, rules, _rulesTable(message.rules, path + ".rules"),
                            requirementMap, message.bypass_cors_preflight, prefix)
    config.stats.declare(context)
    return config
