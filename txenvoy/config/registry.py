# -*- test-case-name: tests.config.test_registry -*-
"""
The extension registry: C{typed_config} C{@type} -> factory.

Envoy 1.40 picks an extension only by the C{@type} of its C{typed_config}
(the C{name} is informational). txenvoy does the same. Built-in extensions
register themselves when L{txenvoy.extensions} is imported; third parties
ship an L{IExtensionFactory} provider as a C{twisted.plugin} (an object in a
module under their own C{twisted/plugins/}) and are found by
L{loadPlugins}.
"""

import functools

from google.protobuf import descriptor_pool, message_factory
from twisted.plugin import IPlugin, getPlugins
from zope.interface import implementer

from txenvoy import interfaces
from txenvoy.config import messages, typed_struct
from txenvoy.config.errors import (
    ConfigError,
    UnknownExtension,
    UnsupportedExtension,
    UnsupportedField,
)
from txenvoy.config.fields import checkFields
from txenvoy.interfaces import IExtensionFactory


class Category:
    """The kinds of extension, as Envoy names its extension categories."""

    LISTENER_FILTER = "envoy.filters.listener"
    NETWORK_FILTER = "envoy.filters.network"
    HTTP_FILTER = "envoy.filters.http"
    ACCESS_LOGGER = "envoy.access_loggers"
    TRANSPORT_SOCKET_DOWNSTREAM = "envoy.transport_sockets.downstream"
    TRANSPORT_SOCKET_UPSTREAM = "envoy.transport_sockets.upstream"
    STATS_SINK = "envoy.stats_sinks"
    TRACER = "envoy.tracers"
    CLUSTER = "envoy.clusters"
    RESOURCE_MONITOR = "envoy.resource_monitors"
    WATCHDOG_ACTION = "envoy.guarddog_actions"
    UPSTREAM_OPTIONS = "envoy.upstream_options"
    BOOTSTRAP = "envoy.bootstrap"
    COMPRESSOR = "envoy.compression.compressor"
    DECOMPRESSOR = "envoy.compression.decompressor"
    CLUSTER_SPECIFIER = "envoy.router.cluster_specifier_plugin"
    UDP_LISTENER_FILTER = "envoy.filters.udp_listener"
    CONFIG_VALIDATOR = "envoy.config.validators"
    INTERNAL_REDIRECT_PREDICATE = "envoy.internal_redirect_predicates"
    OTHER = "other"


#: What a factory's C{create} returns, per category: the registry refuses
#: anything else, so a broken third-party extension fails when the config
#: loads, naming its field, rather than on the first connection.
CATEGORY_INTERFACES = {
    Category.LISTENER_FILTER: interfaces.IListenerFilterFactory,
    Category.NETWORK_FILTER: interfaces.INetworkFilterFactory,
    Category.HTTP_FILTER: interfaces.IHttpFilterFactory,
    Category.ACCESS_LOGGER: interfaces.IAccessLogger,
    Category.TRANSPORT_SOCKET_DOWNSTREAM: interfaces.IDownstreamTransportSocketFactory,
    Category.TRANSPORT_SOCKET_UPSTREAM: interfaces.IUpstreamTransportSocketFactory,
    Category.STATS_SINK: interfaces.IStatsSink,
    Category.TRACER: interfaces.ITracerDriver,
    Category.CLUSTER: interfaces.ICluster,
    Category.COMPRESSOR: interfaces.ICompressorFactory,
    Category.DECOMPRESSOR: interfaces.IDecompressorFactory,
    Category.CLUSTER_SPECIFIER: interfaces.IClusterSpecifierPlugin,
    Category.CONFIG_VALIDATOR: interfaces.IConfigValidator,
    Category.INTERNAL_REDIRECT_PREDICATE: interfaces.IInternalRedirectPredicate,
}

_factories = {}
_byName = {}


@implementer(IExtensionFactory, IPlugin)
class FunctionFactory:
    """
    An L{IExtensionFactory} made from a plain function (see L{extension}).

    @ivar function: C{create(message, context)}, the function itself.
    """

    def __init__(self, category, typeNames, names, create):
        self.category = category
        self.typeNames = tuple(typeNames)
        self.names = tuple(names)
        self.function = create

    def create(self, message, context):
        return self.function(message, context)


def register(factory):
    """
    Add an L{IExtensionFactory}; a later registration of the same
    (category, type) replaces the earlier one, so a plugin can override a
    built-in.
    """
    for typeName in factory.typeNames:
        _factories[(factory.category, typeName)] = factory
    for name in factory.names:
        _byName[(factory.category, name)] = factory
    return factory


def unregister(factory):
    """
    Remove an L{IExtensionFactory} added with L{register} (a test's own
    extension, after the test).
    """
    for typeName in factory.typeNames:
        if _factories.get((factory.category, typeName)) is factory:
            del _factories[(factory.category, typeName)]


def extension(category, typeName, *names, fields=None):
    """
    Decorator registering C{create(message, context)} for one C{@type}
    (C{None} for an extension found only by name, as Envoy's cluster
    types are)::

        @extension(Category.NETWORK_FILTER,
                   "envoy.extensions.filters.network.echo.v3.Echo",
                   "envoy.filters.network.echo", fields=())
        def echo(message, context):
            return EchoFactory()

    @param fields: the message fields C{create} honours; every other one
        set is reported as an L{UnsupportedField} at
        C{<path>.typed_config.<field>} before C{create} runs.
    """

    def deco(create):
        if fields is not None:
            create = _checkingFields(create, frozenset(fields))
        register(FunctionFactory(category, [typeName] if typeName else [], names, create))
        return create

    return deco


def _checkingFields(create, fields):
    """C{create}, checking the message's fields against C{fields} first."""

    @functools.wraps(create)
    def checked(message, context):
        checkFields(message, fields, context.configPath)
        return create(message, context)

    return checked


def lookup(category, typeName):
    """@return: the factory for that C{@type} in that category, or C{None}."""
    return _factories.get((category, typeName))


def lookupName(category, name):
    """
    @return: the factory registered under Envoy's extension C{name} (such
        as C{envoy.cluster.static}) in that category, or C{None}.
    """
    import txenvoy.extensions  # noqa: F401  (built-ins register on import)

    return _byName.get((category, name))


def createByName(category, name, message, context, path):
    """
    Build an extension found by its name rather than a C{typed_config}
    (Envoy's cluster types: C{type: STRICT_DNS} is C{envoy.cluster.strict_dns}).

    @raise UnsupportedField: when no extension has that name.
    @raise ConfigError: when what it makes does not provide its category's
        interface.
    """
    factory = lookupName(category, name)
    if factory is None:
        raise UnsupportedField(path, "no extension named '%s'" % (name,))
    return _checkProvides(category, name, factory.create(message, context), path)


def registered(category=None):
    """@return: sorted C{(category, typeName)} pairs, for docs and /server_info."""
    return sorted(k for k in _factories if category is None or k[0] == category)


def nodeExtensions():
    """
    Every extension registered, plugins included, as the node's
    C{extensions} list names them to a control plane (Envoy's
    C{Node.extensions}): C{[(category, name, typeUrls)]}, sorted, one
    entry per name.
    """
    if not _pluginsLoaded:
        loadPlugins()
    seen = {}
    for factory in list(_factories.values()) + list(_byName.values()):
        for name in factory.names:
            seen[(factory.category, name)] = tuple(factory.typeNames)
    return [(category, name, typeUrls) for (category, name), typeUrls in sorted(seen.items())]


def typeNameOf(any_):
    """
    The full message name of a C{google.protobuf.Any}'s type URL; for a
    C{TypedStruct} naming a protobuf type, that type's name (the message
    L{unpackAny} gives).
    """
    typeName = _rawTypeName(any_)
    if typed_struct.isTypedStruct(typeName):
        struct = _unpackRaw(any_, "", typeName)
        if typed_struct.messageClassFor(struct.type_url) is not None:
            return typed_struct.innerTypeName(struct.type_url)
    return typeName


def _rawTypeName(any_):
    return any_.type_url.rsplit("/", 1)[-1]


def _unpackRaw(any_, path, typeName):
    pool = descriptor_pool.Default()
    try:
        desc = pool.FindMessageTypeByName(typeName)
    except KeyError:
        # A config that came as bytes (an xDS response, a .pb file) never
        # went through the JSON parser that imports each @type's module.
        from txenvoy.config import protos

        try:
            if not protos.importTypeName(typeName):
                raise KeyError(typeName)
            desc = pool.FindMessageTypeByName(typeName)
        except KeyError:
            raise ConfigError("%s: could not find @type '%s'" % (path, any_.type_url))
    msg = message_factory.GetMessageClass(desc)()
    any_.Unpack(msg)
    return msg


def unpackAny(any_, path):
    """
    Unpack a C{google.protobuf.Any} into its concrete message class; a
    C{TypedStruct} naming a protobuf type is converted to that message, as
    Envoy's C{translateOpaqueConfig} does.
    """
    message = _unpackRaw(any_, path, _rawTypeName(any_))
    return typed_struct.unwrap(message, path)[0]


def createExtension(category, typedExtension, context, path):
    """
    Build the compiled object for a C{{name, typed_config}} entry (a
    filter, an access logger, a transport socket...).

    @param typedExtension: a message with C{name} and C{typed_config}.
    @param path: the field path, for messages (C{...filters[0]}).
    @raise UnsupportedExtension: for an C{@type} txenvoy does not implement.
    """
    name = getattr(typedExtension, "name", "")
    if not typedExtension.HasField("typed_config"):
        raise messages.noImplementation(name, path)
    any_ = typedExtension.typed_config
    typeName = _rawTypeName(any_)
    if typed_struct.isTypedStruct(typeName):
        return _createFromTypedStruct(category, name, any_, context, path)
    factory = lookup(category, typeName)
    if factory is None:
        raise noExtension(path + ".typed_config", typeName, name)
    created = _create(factory, unpackAny(any_, path + ".typed_config"), context.child(path),
                      typeName)
    return _checkProvides(category, typeName, created, path + ".typed_config")


def _checkProvides(category, typeName, created, path):
    """
    @return: C{created}, when it provides its category's interface.
    @raise ConfigError: naming the extension and the interface otherwise.
    """
    interface = CATEGORY_INTERFACES.get(category)
    if interface is not None and not interface.providedBy(created):
        raise ConfigError("%s: the extension for '%s' made %r, which does not "
                          "provide %s" % (path, typeName, created, interface.__name__))
    return created


#: The proto packages of Envoy's own API (xds-protos).
_ENVOY_ROOTS = ("envoy", "xds", "udpa", "contrib")


def isEnvoyType(typeName):
    """Whether C{typeName} belongs to Envoy's API rather than a third party's."""
    return typeName.split(".", 1)[0] in _ENVOY_ROOTS


def noExtension(path, typeName, name=""):
    """
    The error for a C{@type} no factory is registered for: an Envoy
    extension txenvoy does not implement yet, or a third-party type whose
    package is not installed.
    """
    if isEnvoyType(typeName):
        return UnsupportedExtension(path, typeName, name)
    return UnknownExtension(path, typeName, name)


def _create(factory, message, context, typeName):
    """
    C{factory.create}; whatever else a factory raises becomes one
    L{ConfigError} naming the field path, never a traceback.
    """
    try:
        return factory.create(message, context)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            "%s: the extension for type.googleapis.com/%s (%s) failed to build: %s: %s"
            % (context.path, typeName, _factoryName(factory), type(e).__name__,
               " ".join(str(e).split())))


def _factoryName(factory):
    create = getattr(factory, "function", None) or getattr(factory, "create", None)
    module = getattr(create, "__module__", None) or type(factory).__module__
    name = getattr(create, "__qualname__", None) or type(factory).__qualname__
    return "%s.%s" % (module, name)


def _createFromTypedStruct(category, name, any_, context, path):
    """
    Dispatch a C{TypedStruct} on its inner C{type_url}. When that names a
    protobuf type the factory gets that message, converted as Envoy
    converts it, and its errors point into the struct's C{value}; otherwise
    it gets the C{value} as a plain dict. The latter is how filters written
    in Python, with no protobuf schema, are configured from Envoy YAML.
    """
    from google.protobuf import json_format

    configPath = path + ".typed_config"
    struct = _unpackRaw(any_, configPath, _rawTypeName(any_))
    typeName = typed_struct.innerTypeName(struct.type_url)
    factory = lookup(category, typeName)
    if factory is None:
        raise noExtension(configPath + ".type_url", typeName, name)
    if typed_struct.messageClassFor(struct.type_url) is not None:
        config = typed_struct.toMessage(struct, configPath)
        configPath += ".value"
    else:
        config = json_format.MessageToDict(struct.value)
    created = _create(factory, config, context.child(path, configPath), typeName)
    return _checkProvides(category, typeName, created, configPath)


def loadPlugins():
    """
    Register every L{IExtensionFactory} shipped as a C{twisted.plugin} by
    other packages.
    """
    global _pluginsLoaded
    import txenvoy.extensions  # noqa: F401  (built-ins register on import)

    for factory in getPlugins(IExtensionFactory):
        register(factory)
    _pluginsLoaded = True


_pluginsLoaded = False


def isRegisteredType(typeName):
    """
    Whether any factory, of any category, is registered for C{typeName};
    the plugins are looked for once if they were not yet.
    """
    if not _pluginsLoaded:
        loadPlugins()
    return any(key[1] == typeName for key in _factories)

