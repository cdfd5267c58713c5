# -*- test-case-name: tests.extensions.filters.common.test_ext_authz_grpc -*-
"""
The gRPC authorization service of C{ext_authz}
(C{envoy.service.auth.v3.Authorization/Check}), shared by the HTTP and
the network filter: the C{CheckRequest} as Envoy 1.40 fills it, the call
on the worker through L{txenvoy.grpc.async_client}, and the
C{CheckResponse} turned into what the filters apply.

Behaviour copied from Envoy 1.40 (pinned in
C{tests/e2e/test_ext_authz_grpc.py}):

 - the request's C{attributes} carry the downstream C{source} and
   C{destination} socket addresses, the C{request.time}, and for HTTP the
   stream C{id}, C{method}, every request header (pseudo-headers
   C{:authority}, C{:method}, C{:path}, C{:scheme} included, several
   values joined with C{,}), C{path}, C{host}, C{scheme}, C{protocol},
   and with C{with_request_body} the C{body} and its C{size} (C{x-envoy-auth-partial-body} among the headers), the route's
   C{context_extensions}, and empty C{metadata_context} and
   C{route_metadata_context};
 - the call carries C{x-envoy-internal: true} and
   C{x-envoy-expected-rq-timeout-ms} as metadata;
 - an OK C{status} is an L{OkAnswer}: C{ok_response.headers} with
   C{append: true} are appended to an existing request header (joined
   with C{,}; an absent one is not added), every other one replaces the
   request's (removed, then added at the end) whatever its
   C{append_action}; C{headers_to_remove} are removed;
   C{response_headers_to_add} are added to the response (C{append: true}
   or C{APPEND_IF_EXISTS_OR_ADD}), set (C{append: false} or
   C{OVERWRITE_IF_EXISTS_OR_ADD}: removed, then added at the end), added
   when absent (C{ADD_IF_ABSENT}) or set when present
   (C{OVERWRITE_IF_EXISTS}), in that order;
 - any other C{status} is a L{DeniedAnswer}: C{denied_response.status}
   (403 when unset), its C{body}, its headers added to the local reply
   (one with C{append: true} only joins a header the reply has);
 - a failed call (unreachable service, timeout, no host) is an error.
"""

from envoy.service.auth.v3 import external_auth_pb2

from txenvoy.grpc.async_client import GrpcServiceClient

__all__ = ["CHECK_METHOD", "DeniedAnswer", "GrpcAuthorizationService", "OkAnswer",
           "checkRequest", "readCheckResponse"]

CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"

# envoy.config.core.v3.HeaderValueOption.HeaderAppendAction
_APPEND_IF_EXISTS_OR_ADD = 0
_ADD_IF_ABSENT = 1
_OVERWRITE_IF_EXISTS_OR_ADD = 2
_OVERWRITE_IF_EXISTS = 3

# google.rpc.Code.OK
_OK = 0


class OkAnswer:
    """
    What an OK C{CheckResponse} asks of the request and the response.

    @ivar requestSet: C{[(name, value)]} replacing the request's headers.
    @ivar requestAppend: C{[(name, value)]} joined to existing ones.
    @ivar requestRemove: header names to remove.
    @ivar responseAdd: C{[(name, value)]} added to the response, and
        C{responseSet}, C{responseAddIfAbsent}, C{responseOverwrite}.
    """

    allowed = True

    def __init__(self):
        self.requestSet = []
        self.requestAppend = []
        self.requestRemove = []
        self.responseAdd = []
        self.responseSet = []
        self.responseAddIfAbsent = []
        self.responseOverwrite = []

    def applyToRequest(self, headers):
        """Apply the request mutations to a L{txenvoy.http.headers.HeaderMap}."""
        for name, value in self.requestAppend:
            existing = headers.get(name)
            if existing is not None:
                headers.set(name, existing + b"," + value)
        for name, _ in self.requestSet:
            headers.remove(name)
        for name, value in self.requestSet:
            headers.add(name, value)
        for name in self.requestRemove:
            if not name.startswith(b":") and name != b"host":
                headers.remove(name)

    def applyToResponse(self, headers):
        """Apply the response mutations to a L{txenvoy.http.headers.HeaderMap}."""
        for name, value in self.responseAdd:
            headers.add(name, value)
        for name, value in self.responseSet:
            headers.remove(name)
            headers.add(name, value)
        for name, value in self.responseAddIfAbsent:
            if headers.get(name) is None:
                headers.add(name, value)
        for name, value in self.responseOverwrite:
            if headers.remove(name):
                headers.add(name, value)

    def mutatesRequest(self):
        return bool(self.requestSet or self.requestAppend or self.requestRemove)

    def mutatesResponse(self):
        return bool(self.responseAdd or self.responseSet or self.responseAddIfAbsent
                    or self.responseOverwrite)


class DeniedAnswer:
    """
    A denial: C{status} (int), C{body} (bytes) and the C{headers} to add
    to the local reply as C{[(name, value, append)]}.
    """

    allowed = False

    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        self.headers = headers

    def applyToReply(self, headers):
        """Add the denial's headers to the local reply's L{HeaderMap}."""
        for name, value, append in self.headers:
            if append:
                existing = headers.get(name)
                if existing is not None:
                    headers.set(name, existing + b"," + value)
            else:
                headers.add(name, value)


def _pair(option):
    return (option.header.key.lower().encode("latin-1"),
            (option.header.raw_value or option.header.value.encode("utf-8")))


def readCheckResponse(response):
    """
    @param response: a C{CheckResponse}.
    @return: an L{OkAnswer} or a L{DeniedAnswer}.
    """
    if response.status.code == _OK:
        answer = OkAnswer()
        ok = response.ok_response
        for option in ok.headers:
            if option.HasField("append") and option.append.value:
                answer.requestAppend.append(_pair(option))
            else:
                answer.requestSet.append(_pair(option))
        answer.requestRemove = [name.lower().encode("latin-1") for name in ok.headers_to_remove]
        for option in ok.response_headers_to_add:
            if option.HasField("append"):
                target = answer.responseAdd if option.append.value else answer.responseSet
            else:
                target = {
                    _APPEND_IF_EXISTS_OR_ADD: answer.responseAdd,
                    _ADD_IF_ABSENT: answer.responseAddIfAbsent,
                    _OVERWRITE_IF_EXISTS_OR_ADD: answer.responseSet,
                    _OVERWRITE_IF_EXISTS: answer.responseOverwrite,
                }.get(option.append_action, answer.responseAdd)
            target.append(_pair(option))
        return answer
    denied = response.denied_response
    status = denied.status.code or 403
    headers = [_pair(option) + (option.HasField("append") and option.append.value,)
               for option in denied.headers]
    return DeniedAnswer(status, denied.body.encode("utf-8"), headers)


def _setAddress(message, address):
    if address is None:
        return
    socket = message.address.socket_address
    socket.address = address[0]
    socket.port_value = address[1]


def checkRequest(streamInfo, now, contextExtensions=None, http=None):
    """
    A C{CheckRequest} with the connection's addresses; C{http} fills
    C{attributes.request.http} (a callable given the message). Envoy's
    network filter sends neither a C{request} nor a
    C{route_metadata_context}.
    """
    request = external_auth_pb2.CheckRequest()
    attributes = request.attributes
    _setAddress(attributes.source, streamInfo.downstreamRemoteAddress)
    _setAddress(attributes.destination, streamInfo.downstreamLocalAddress)
    if http is not None:
        attributes.request.time.FromNanoseconds(int(now * 1e9))
        http(attributes.request.http)
    if contextExtensions:
        attributes.context_extensions.update(contextExtensions)
    attributes.metadata_context.SetInParent()
    if http is not None:
        attributes.route_metadata_context.SetInParent()
    return request


class GrpcAuthorizationService(GrpcServiceClient):
    """
    A compiled C{grpc_service} of an C{ext_authz} filter, calling C{Check}.
    """

    def __init__(self, target):
        GrpcServiceClient.__init__(self, target, CHECK_METHOD, external_auth_pb2.CheckResponse)

    def check(self, dispatcher, request):
        """
        Start the check (never blocks).

        @return: a Deferred firing on the worker with an L{OkAnswer} or a
            L{DeniedAnswer}, or failing (L{GrpcCallError}) when the service
            could not answer; cancelling it abandons the call.
        """
        return self.call(dispatcher, request).addCallback(readCheckResponse)
