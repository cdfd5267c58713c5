# -*- test-case-name: tests.config.test_loader -*-
"""
Find and import the generated protobuf module that defines a message type.

A config names extension types only by a type URL
(C{type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy}).
protobuf resolves such a name only if the module defining it has been
imported, and importing all of xds-protos up front costs seconds. So the
modules are found on demand: a proto package maps to a directory
(C{envoy.extensions.filters.network.tcp_proxy.v3} ->
C{envoy/extensions/filters/network/tcp_proxy/v3/}), and every C{*_pb2.py} in
that directory is imported the first time a type from that package is asked
for. Directory listings are cached, so each package is looked at once.
"""

import importlib
import importlib.util
import os

from google.protobuf import descriptor_pool, message_factory

#: Top-level packages shipped by xds-protos and protobuf. Only these are
#: searched, so a type URL in a config can never import anything else.
ROOTS = (
    "envoy",
    "xds",
    "udpa",
    "validate",
    "google",
    "cel",
    "opencensus",
    "opentelemetry",
)

# root package name -> list of directories (namespace packages have several)
_rootLocations = {}
# proto package name -> tuple of module names, filled one package at a time
_packageModules = {}
# proto packages whose modules were already imported
_importedPackages = set()
# full message name -> class
_classes = {}


def _locations(root):
    """The directories holding the top-level package C{root}."""
    try:
        return _rootLocations[root]
    except KeyError:
        pass
    try:
        spec = importlib.util.find_spec(root)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        locations = []
    else:
        locations = list(spec.submodule_search_locations or ())
    _rootLocations[root] = locations
    return locations


def modulesForPackage(package):
    """
    The names of the C{*_pb2} modules in the directory matching a proto
    package.

    @param package: a proto package, C{"envoy.config.cluster.v3"}.
    @return: a tuple of importable module names, empty when there is no
        such directory under one of L{ROOTS}.
    """
    try:
        return _packageModules[package]
    except KeyError:
        pass
    parts = package.split(".")
    found = []
    if parts[0] in ROOTS and all(parts):
        for location in _locations(parts[0]):
            directory = os.path.join(location, *parts[1:])
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            found.extend(
                package + "." + name[:-3]
                for name in names
                if name.endswith("_pb2.py")
            )
    result = tuple(found)
    _packageModules[package] = result
    return result


def _findDescriptor(fullName):
    try:
        return descriptor_pool.Default().FindMessageTypeByName(fullName)
    except KeyError:
        return None


def _typeName(fullName):
    # Accept a whole type URL as well as a bare message name.
    return fullName.rsplit("/", 1)[-1].strip()


def importTypeName(fullName):
    """
    Make sure the message C{fullName} is in the default descriptor pool,
    importing the xds-protos modules of its package if needed.

    @param fullName: a full message name
        (C{envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy}), nested
        names included; a type URL is accepted too.
    @return: C{True} if the message type is now known, else C{False}.
    """
    if not isinstance(fullName, str):
        return False
    name = _typeName(fullName)
    if not name or _findDescriptor(name) is not None:
        return bool(name)
    parts = name.split(".")
    # The package is some prefix of the name (nested messages add more
    # components), so try the longest prefixes first.
    for end in range(len(parts) - 1, 0, -1):
        package = ".".join(parts[:end])
        if package in _importedPackages:
            continue
        modules = modulesForPackage(package)
        if not modules:
            continue
        _importedPackages.add(package)
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:
                # One broken or conflicting module must not hide the
                # others in the package; the lookup below decides.
                pass
        if _findDescriptor(name) is not None:
            return True
    return _findDescriptor(name) is not None


def messageClass(fullName):
    """
    The generated class for a message type, importing its module if needed.

    @param fullName: a full message name or type URL.
    @raise KeyError: no installed module defines that type.
    """
    name = _typeName(fullName) if isinstance(fullName, str) else fullName
    try:
        return _classes[name]
    except (KeyError, TypeError):
        pass
    if not importTypeName(name):
        raise KeyError(name)
    cls = message_factory.GetMessageClass(_findDescriptor(name))
    _classes[name] = cls
    return cls
