# -*- test-case-name: tests.router.test_internal_redirect -*-
"""
Internal redirects (a route's C{internal_redirect_policy}, Envoy's
C{InternalRedirectPolicyImpl} and the router's C{setupRedirect} /
C{convertRequestHeadersForInternalRedirect}): an upstream 3xx whose code
the policy lists is followed by txenvoy itself, and the client sees only
the answer at the end of the chain.

Envoy 1.40's rules, pinned in C{tests/e2e/test_internal_redirect.py}:

 - only a request read in full whose body stayed within the buffer limit
   (the router keeps it while the policy is set) is redirected;
 - the C{location} must be an absolute http or https URL (a relative one
   counts C{passthrough_internal_redirect_bad_location});
 - a change of scheme needs C{allow_cross_scheme_redirect}
   (C{passthrough_internal_redirect_unsafe_scheme});
 - at most C{max_internal_redirects} per request
   (C{passthrough_internal_redirect_too_many_redirects});
 - the new URL must match a route (C{passthrough_internal_redirect_no_route})
   that every predicate accepts (C{passthrough_internal_redirect_predicate});
 - a 303 to a request other than GET or HEAD turns it into a GET without
   a body;
 - the redirected request carries C{x-envoy-original-url} and goes
   through route selection and the whole filter chain again.

A redirect that is not followed passes the 3xx to the client; the
cluster counts C{upstream_internal_redirect_succeeded_total} or
C{upstream_internal_redirect_failed_total}.
"""

from urllib.parse import urlsplit

from txenvoy.config import registry
from txenvoy.config.context import FactoryContext
from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields

__all__ = ["InternalRedirectPolicy", "compileInternalRedirectPolicy", "parseAbsoluteUrl",
           "NUM_INTERNAL_REDIRECTS"]

#: Envoy's filter state name of the request's redirect count.
NUM_INTERNAL_REDIRECTS = "num_internal_redirects"

_POLICY_FIELDS = ("max_internal_redirects", "redirect_response_codes", "predicates",
                  "allow_cross_scheme_redirect", "response_headers_to_copy")
#: The codes a policy may list; Envoy ignores any other.
_REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))
_SCHEMES = (b"http", b"https")


class InternalRedirectPolicy:
    """
    A compiled C{InternalRedirectPolicy}.

    @ivar maxInternalRedirects: redirects allowed per request.
    @ivar redirectResponseCodes: the upstream statuses that are followed.
    @ivar predicates: L{txenvoy.interfaces.IInternalRedirectPredicate}s.
    @ivar allowCrossSchemeRedirect: http to https (and back) is allowed.
    @ivar responseHeadersToCopy: lower-case names copied from the 3xx to
        the redirected request.
    @ivar routeName: the name of the route that owns the policy.
    """

    __slots__ = ("maxInternalRedirects", "redirectResponseCodes", "predicates",
                 "allowCrossSchemeRedirect", "responseHeadersToCopy", "routeName")

    def __init__(self, maxInternalRedirects=1, redirectResponseCodes=frozenset((302,)),
                 predicates=(), allowCrossSchemeRedirect=False, responseHeadersToCopy=(),
                 routeName=""):
        self.maxInternalRedirects = maxInternalRedirects
        self.redirectResponseCodes = redirectResponseCodes
        self.predicates = predicates
        self.allowCrossSchemeRedirect = allowCrossSchemeRedirect
        self.responseHeadersToCopy = responseHeadersToCopy
        self.routeName = routeName

    def shouldRedirectForResponseCode(self, status):
        """Whether an upstream C{status} is one this policy follows."""
        return status in self.redirectResponseCodes


def compileInternalRedirectPolicy(action, routeName, path):
    """
    The route action's policy: its C{internal_redirect_policy}, or the
    deprecated C{internal_redirect_action: HANDLE_INTERNAL_REDIRECT} (with
    C{max_internal_redirects}); C{None} when neither enables redirects.
    """
    if not action.HasField("internal_redirect_policy"):
        if action.internal_redirect_action != 1:        # HANDLE_INTERNAL_REDIRECT
            return None
        maxRedirects = (action.max_internal_redirects.value
                        if action.HasField("max_internal_redirects") else 1)
        return InternalRedirectPolicy(maxInternalRedirects=maxRedirects, routeName=routeName)
    policy = action.internal_redirect_policy
    policyPath = path + ".internal_redirect_policy"
    checkFields(policy, _POLICY_FIELDS, policyPath)
    codes = frozenset(c for c in policy.redirect_response_codes if c in _REDIRECT_CODES)
    if not policy.redirect_response_codes:
        codes = frozenset((302,))
    copied = []
    for i, name in enumerate(policy.response_headers_to_copy):
        lowered = name.lower()
        if lowered.startswith(":") or lowered == "host":
            raise ConfigError(":-prefixed headers or Hosts may not be specified here. @ "
                              "%s.response_headers_to_copy[%d]" % (policyPath, i))
        copied.append(lowered.encode("latin-1"))
    predicates = tuple(
        registry.createExtension(
            registry.Category.INTERNAL_REDIRECT_PREDICATE, predicate,
            FactoryContext(None, None, path="%s.predicates[%d]" % (policyPath, i)),
            "%s.predicates[%d]" % (policyPath, i))
        for i, predicate in enumerate(policy.predicates))
    return InternalRedirectPolicy(
        maxInternalRedirects=(policy.max_internal_redirects.value
                              if policy.HasField("max_internal_redirects") else 1),
        redirectResponseCodes=codes,
        predicates=predicates,
        allowCrossSchemeRedirect=policy.allow_cross_scheme_redirect,
        responseHeadersToCopy=tuple(copied),
        routeName=routeName)


def parseAbsoluteUrl(location):
    """
    Envoy's C{Http::Utility::Url::initialize} for a C{location}: an
    absolute http or https URL.

    @param location: C{bytes}.
    @return: C{(scheme, hostAndPort, pathAndQuery)} as C{bytes} (a
        default port dropped, the host lower-cased, the fragment kept), or
        C{None} for anything else.
    """
    try:
        text = location.decode("ascii")
        parts = urlsplit(text.strip())
        port = parts.port
    except (UnicodeDecodeError, ValueError):
        return None
    scheme = parts.scheme.lower().encode("ascii")
    if scheme not in _SCHEMES or not parts.hostname:
        return None
    if port is not None and not 0 < port <= 65535:
        return None
    # The host and port as written (Envoy 1.40 keeps a default port).
    host = parts.netloc.rpartition("@")[2].encode("ascii")
    # The path as written: Envoy 1.40 neither resolves dot segments nor
    # changes case.
    path = parts.path.encode("ascii") or b"/"
    if parts.query or text.rstrip().split("#", 1)[0].endswith("?"):
        path += b"?" + parts.query.encode("ascii")
    if parts.fragment:
        path += b"#" + parts.fragment.encode("ascii")
    return scheme, host, path
