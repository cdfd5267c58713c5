# -*- test-case-name: tests.extensions.filters.http.test_jwt_authn -*-
"""
JSON Web Tokens and key sets as C{jwt_authn} checks them (Envoy's
C{jwt_verify_lib}): parsing with its error statuses, and signatures
verified with PyJWT's algorithms on C{cryptography} keys.
"""

import base64
import binascii
import json

from jwt import PyJWK
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import PyJWTError

__all__ = ["JwtError", "Jwt", "Jwks", "Status", "parseJwks"]


class Status:
    """Envoy's jwt_verify_lib statuses: C{(code, message)}."""

    Ok = (200, "OK")
    JwtMissed = (401, "Jwt is missing")
    JwtBadFormat = (401, "Jwt is not in the form of Header.Payload.Signature with two dots "
                         "and 3 sections")
    JwtHeaderParseErrorBadBase64 = (401, "Jwt header is an invalid Base64url encoded")
    JwtHeaderParseErrorBadJson = (401, "Jwt header is an invalid JSON")
    JwtHeaderBadAlg = (401, "Jwt header [alg] field is required and must be a string")
    JwtHeaderNotImplementedAlg = (401, "Jwt header [alg] is not supported")
    JwtHeaderBadKid = (401, "Jwt header [kid] field is not a string")
    JwtPayloadParseErrorBadBase64 = (401, "Jwt payload is an invalid Base64url encoded")
    JwtPayloadParseErrorBadJson = (401, "Jwt payload is an invalid JSON")
    JwtPayloadParseErrorIssNotString = (401, "Jwt payload [iss] field is not a string")
    JwtPayloadParseErrorSubNotString = (401, "Jwt payload [sub] field is not a string")
    JwtPayloadParseErrorIatNotInteger = (401, "Jwt payload [iat] field is not an integer")
    JwtPayloadParseErrorNbfNotInteger = (401, "Jwt payload [nbf] field is not an integer")
    JwtPayloadParseErrorExpNotInteger = (401, "Jwt payload [exp] field is not an integer")
    JwtPayloadParseErrorAudNotString = (401, "Jwt payload [aud] field is not a string or "
                                             "string list")
    JwtSignatureParseErrorBadBase64 = (401, "Jwt signature is an invalid Base64url encoded")
    JwtUnknownIssuer = (401, "Jwt issuer is not configured")
    JwtAudienceNotAllowed = (403, "Audiences in Jwt are not allowed")
    JwtNotYetValid = (401, "Jwt not yet valid")
    JwtExpired = (401, "Jwt is expired")
    JwtMissingExpiration = (401, "Jwt is missing expiration time")
    JwtVerificationFail = (401, "Jwt verification fails")
    JwksKidAlgMismatch = (401, "Jwks doesn't have key to match kid or alg from Jwt")
    JwksFetchFail = (401, "Jwks remote fetch is failed")


class JwtError(Exception):
    """A token that cannot be used; C{status} is its L{Status}."""

    def __init__(self, status):
        Exception.__init__(self, status[1])
        self.status = status


_ALGORITHMS = get_default_algorithms()
#: The key types each algorithm family signs with.
_FAMILIES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "HS": "oct", "Ed": "OKP"}


def _b64decode(text):
    if not isinstance(text, str) or not text or any(c in text for c in "+/= \t"):
        raise ValueError(text)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _isInt(value):
    return isinstance(value, int) and not isinstance(value, bool)


class Jwt:
    """
    A parsed token.

    @ivar header: its header, a dict.
    @ivar payload: its claims, a dict.
    @ivar payloadSegment: the payload as it came (base64url), C{str}.
    @ivar audiences: the C{aud} claim as a list.
    """

    def __init__(self, token):
        parts = token.split(".")
        if len(parts) != 3:
            raise JwtError(Status.JwtBadFormat)
        headerPart, payloadPart, signaturePart = parts
        try:
            header = _b64decode(headerPart)
        except (ValueError, binascii.Error):
            raise JwtError(Status.JwtHeaderParseErrorBadBase64)
        try:
            header = json.loads(header)
            if not isinstance(header, dict):
                raise ValueError(header)
        except ValueError:
            raise JwtError(Status.JwtHeaderParseErrorBadJson)
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise JwtError(Status.JwtHeaderBadAlg)
        if alg not in _ALGORITHMS or alg == "none":
            raise JwtError(Status.JwtHeaderNotImplementedAlg)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JwtError(Status.JwtHeaderBadKid)
        try:
            payload = _b64decode(payloadPart)
        except (ValueError, binascii.Error):
            raise JwtError(Status.JwtPayloadParseErrorBadBase64)
        try:
            payload = json.loads(payload)
            if not isinstance(payload, dict):
                raise ValueError(payload)
        except ValueError:
            raise JwtError(Status.JwtPayloadParseErrorBadJson)
        for claim, status in (("iss", Status.JwtPayloadParseErrorIssNotString),
                              ("sub", Status.JwtPayloadParseErrorSubNotString)):
            if claim in payload and not isinstance(payload[claim], str):
                raise JwtError(status)
        for claim, status in (("iat", Status.JwtPayloadParseErrorIatNotInteger),
                              ("nbf", Status.JwtPayloadParseErrorNbfNotInteger),
                              ("exp", Status.JwtPayloadParseErrorExpNotInteger)):
            if claim in payload and not _isInt(payload[claim]):
                raise JwtError(status)
        aud = payload.get("aud")
        if aud is None:
            audiences = []
        elif isinstance(aud, str):
            audiences = [aud]
        elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
            audiences = aud
        else:
            raise JwtError(Status.JwtPayloadParseErrorAudNotString)
        try:
            self.signature = _b64decode(signaturePart)
        except (ValueError, binascii.Error):
            raise JwtError(Status.JwtSignatureParseErrorBadBase64)
        self.header = header
        self.payload = payload
        self.alg = alg
        self.kid = kid
        self.issuer = payload.get("iss", "")
        self.audiences = audiences
        self.payloadSegment = payloadPart
        self.signingInput = (headerPart + "." + payloadPart).encode("ascii")

    def checkTime(self, now, skew, requireExpiration=False):
        """Envoy's C{verifyTimeConstraint}: C{nbf}, then C{exp}."""
        nbf = self.payload.get("nbf")
        if nbf is not None and nbf > now + skew:
            raise JwtError(Status.JwtNotYetValid)
        exp = self.payload.get("exp")
        if exp is None:
            if requireExpiration:
                raise JwtError(Status.JwtMissingExpiration)
        elif exp and now > exp + skew:
            raise JwtError(Status.JwtExpired)


class Jwks:
    """A key set: C{(kid, alg, kty, key)} per usable key."""

    def __init__(self, keys):
        self.keys = keys

    def verify(self, jwt):
        """
        Check the token's signature with a key matching its C{kid} and
        C{alg} (Envoy tries each such key).

        @raise JwtError: C{JwksKidAlgMismatch} or C{JwtVerificationFail}.
        """
        algorithm = _ALGORITHMS[jwt.alg]
        family = _FAMILIES.get(jwt.alg[:2])
        tried = False
        for kid, alg, kty, key in self.keys:
            if jwt.kid is not None and kid is not None and kid != jwt.kid:
                continue
            if alg is not None and alg != jwt.alg:
                continue
            if kty != family:
                continue
            tried = True
            try:
                if algorithm.verify(jwt.signingInput, key, jwt.signature):
                    return
            except Exception:
                continue
        raise JwtError(Status.JwtVerificationFail if tried else Status.JwksKidAlgMismatch)


def parseJwks(text):
    """
    Read a JWKS (or one JWK) from its JSON text.

    @raise ValueError: with Envoy's kind of message, for a set it cannot use.
    """
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError("Jwks is an invalid JSON")
    if not isinstance(data, dict):
        raise ValueError("Jwks is an invalid JSON")
    entries = data.get("keys") if "keys" in data else [data]
    if not isinstance(entries, list):
        raise ValueError("[keys] in Jwks is not an array")
    keys = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        try:
            jwk = PyJWK(entry)
        except (PyJWTError, ValueError, TypeError, KeyError):
            continue
        key = jwk.key
        if entry.get("kty") == "oct":
            key = _b64decode(entry.get("k", ""))
        keys.append((entry.get("kid"), entry.get("alg"), entry.get("kty"), key))
    if not keys:
        raise ValueError("Jwks doesn't have any valid public key")
    return Jwks(keys)
