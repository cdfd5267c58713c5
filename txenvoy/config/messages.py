# -*- test-case-name: tests.config.test_messages -*-
"""
Envoy's words for the config errors that both the cross-checks
(L{txenvoy.config.checks}) and the builders of clusters, listeners and
extensions can meet, written once. Each returns a
L{txenvoy.config.errors.ConfigError}: Envoy's phrase, then C{@} and the
field path.
"""

from txenvoy.config.errors import ConfigError


def _at(message, path):
    return ConfigError("%s @ %s" % (message, path) if path else message)


def duplicateCluster(name, path):
    """Envoy: C{cluster manager: duplicate cluster 'c1'}."""
    return _at("cluster manager: duplicate cluster '%s'" % (name,), path)


def listenerAddressMissing(name, path):
    """Envoy: C{error adding listener named 'l1': address is necessary}."""
    return _at("error adding listener named '%s': address is necessary" % (name,), path)


def internalListenerWithAddress(name, path):
    """
    Envoy: C{error adding listener 'b': address should not be used when an
    internal listener config is provided}.
    """
    return _at("error adding listener '%s': address should not be used when an internal "
               "listener config is provided" % (name,), path)


def internalListenerNeedsBootstrap(name, path):
    """
    Envoy: C{error adding listener named 'b': InternalListener bootstrap
    extension is mandatory}.
    """
    return _at("error adding listener named '%s': InternalListener bootstrap extension is "
               "mandatory" % (name,), path)


def noFilterChains(listener, path):
    """
    Envoy: C{error adding listener '127.0.0.1:10040': no filter chains
    specified}; C{listener} is its address as Envoy prints it.
    """
    return _at("error adding listener '%s': no filter chains specified" % (listener,), path)


def noImplementation(name, path, typeName=""):
    """
    Envoy: C{Didn't find a registered implementation for 'NAME' with type
    URL: 'TYPE'} (an empty type for an entry without C{typed_config}).
    """
    return _at("Didn't find a registered implementation for '%s' with type URL: '%s'"
               % (name, typeName), path)


#: What Envoy adds for a static cluster's endpoint that is not an IP.
STATIC_ENDPOINT_HINT = (". Consider setting resolver_name or setting cluster type to "
                        "'STRICT_DNS' or 'LOGICAL_DNS'")


def malformedIpAddress(address, path, hint=""):
    """Envoy: C{malformed IP address: localhost}, with C{hint} after it."""
    return _at("malformed IP address: %s%s" % (address, hint), path)
