# -*- test-case-name: tests.extensions.router.cluster_specifiers.test_lua -*-
"""
C{envoy.router.cluster_specifier_plugin.lua}: a route's cluster is what a
Lua function, C{envoy_on_route(route_handle)}, returns for the request.

As in Envoy 1.40 (pinned in C{tests/e2e/test_lua.py}): the script is
loaded when the route table loads (one that does not load fails the
config with C{script load error: ...}); each worker thread has its own
state; the handle has C{headers()} (C{get(name)}); a script that fails,
or returns something other than a string (a number is one, as
C{lua_tostring} has it), routes to C{default_cluster}.
The handle's C{getCluster()} (cluster load figures) is not implemented:
a script calling it fails, and routes to C{default_cluster}.
"""

import threading

from twisted.logger import Logger
from zope.interface import implementer

from envoy.extensions.router.cluster_specifiers.lua.v3 import lua_pb2  # noqa: F401

from txenvoy.config.datasource import readDataSource
from txenvoy.config.errors import ConfigError
from txenvoy.config.registry import Category, extension
from txenvoy.extensions.filters.common.lua import LuaScriptError, LuaState
from txenvoy.interfaces import IClusterSpecifierPlugin

__all__ = ["LuaClusterSpecifier", "createLuaClusterSpecifier"]

_NAME = "envoy.router.cluster_specifier_plugin.lua"
_CONFIG = "envoy.extensions.router.cluster_specifiers.lua.v3.LuaConfig"

log = Logger(namespace="lua")

#: The route handle, built per call around one Python function.
_ROUTE_HANDLE = r"""
return function(fn, call)
  local handle = {}
  function handle:headers()
    local h = {}
    function h:get(k) return call("hget", k) end
    return h
  end
  local ok, cluster = pcall(fn, handle)
  if not ok then return nil, tostring(cluster) end
  -- lua_tostring: a number is a string too.
  if type(cluster) ~= "string" and type(cluster) ~= "number" then
    return nil, "return value is not string"
  end
  return tostring(cluster), nil
end
"""


class _RouteState:
    """One worker's state: the script and the route handle's runner."""

    def __init__(self, code):
        self.lua = LuaState(code)
        self.function = self.lua.function("envoy_on_route")
        self.run = self.lua.runtime.execute(_ROUTE_HANDLE)


@implementer(IClusterSpecifierPlugin)
class LuaClusterSpecifier:
    """
    The compiled C{LuaConfig}: picks a cluster per request, in the state of
    the thread (worker) the request runs on.
    """

    def __init__(self, code, defaultCluster):
        self.code = code
        self.defaultCluster = defaultCluster
        self._local = threading.local()

    def _state(self):
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _RouteState(self.code)
        return state

    def clusterName(self, headers):
        """Run C{envoy_on_route}; its answer, or C{default_cluster}."""
        state = self._state()
        if state.function is None:
            return self.defaultCluster

        def call(op, *args):
            if op == b"hget":
                name = args[0].lower() if isinstance(args[0], bytes) else b""
                values = headers.getAll(name)
                return b",".join(values) if values else None
            return None

        cluster, error = state.run(state.function, call)
        if error is not None:
            log.error("script log: {text}, use default cluster", text=_text(error))
        if cluster is None:
            return self.defaultCluster
        return _text(cluster)


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@extension(Category.CLUSTER_SPECIFIER, _CONFIG, _NAME,
           fields=("source_code", "default_cluster"))
def createLuaClusterSpecifier(message, context):
    """Compile a C{LuaConfig}, loading its script once."""
    path = context.path + ".typed_config"
    code = readDataSource(message.source_code, path + ".source_code")
    try:
        LuaState(code)
    except LuaScriptError as e:
        raise ConfigError("%s.source_code: %s" % (path, e))
    return LuaClusterSpecifier(code, message.default_cluster or None)
