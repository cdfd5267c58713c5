"""
End-to-end: the errors a user gets from C{twistd -n envoy} for a config it
cannot run, each one a user can act on.

Envoy stops at the first error; txenvoy's first line keeps Envoy's phrase
(C{error initializing configuration '<file>': ...}) and exit code 1, and the
lines after it give every other error of the config, each with its field
path and its line in the file. Never a traceback.
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import (EXAMPLES, processEnv, runTwistd, runTwistdAll,
                               twistdCommand)

_LINE = re.compile(r" \(line (\d+)\)$")
_PATH = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_@]+|\[[^\]]*\])*)(?::| @)")

#: Three unsupported fields, an Envoy extension txenvoy lacks and one
#: nobody registered, in two listeners and two clusters.
MANY_ERRORS = """\
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
hds_config:
  api_type: GRPC
static_resources:
  clusters:
  - name: hashed
    connect_timeout: 1s
    common_lb_config: {close_connections_on_host_set_change: true}
    load_assignment: {cluster_name: hashed}
  - name: plain
    type: Static
    lb_policy: round_robin
    connect_timeout: 1s
    load_assignment: {cluster_name: plain}
  listeners:
  - name: web
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          codec_type: auto
          proxy_100_continue: true
          route_config:
            virtual_hosts:
            - name: all
              domains: ['*']
              routes: [{match: {prefix: /}, route: {cluster: plain}}]
          http_filters:
          - name: apikey
            typed_config:
              '@type': type.googleapis.com/xds.type.v3.TypedStruct
              type_url: type.googleapis.com/myfilters.ApiKey
              value: {header: x-api-key}
          - name: envoy.filters.http.router
            typed_config:
              '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: mongo
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.mongo_proxy
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy
          stat_prefix: mongo
"""


def _lastKey(path):
    """The last field name of a path (C{a.b[0].c[x]} -> C{c})."""
    return re.sub(r"\[[^\]]*\]$", "", re.sub(r"(\[[^\]]*\])+$", "", path)).rsplit(".", 1)[-1]


class ConfigErrorsTestMixin:

    def writeConfig(self, text, name="config.yaml"):
        directory = tempfile.mkdtemp(prefix="txenvoy-errors-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def assertErrorLines(self, configPath, stderr, configText=None):
        """
        C{stderr} is one error a line, the first one with Envoy's prefix;
        every one names a field path, and its C{(line N)} points at that
        field in the file. No traceback.

        @return: the error lines without the prefix.
        """
        self.assertNotIn("Traceback", stderr)
        if configText is None:
            with open(configPath) as f:
                configText = f.read()
        fileLines = configText.splitlines()
        errors = stderr.rstrip("\n").split("\n")
        prefix = "error initializing configuration '%s': " % (configPath,)
        self.assertTrue(errors[0].startswith(prefix), stderr)
        errors[0] = errors[0][len(prefix):]
        for error in errors:
            line = _LINE.search(error)
            self.assertIsNotNone(line, "no line number: %r" % (error,))
            match = _PATH.match(error) or re.search(r" @ ([^\s:]+)", error)
            self.assertIsNotNone(match, "no field path: %r" % (error,))
            key = _lastKey(match.group(1))
            unknown = re.search(r"no such field: '([^']+)'", error)
            if unknown:
                # Envoy names the message; the line is the misspelt key's.
                key = unknown.group(1)
            text = fileLines[int(line.group(1)) - 1]
            self.assertTrue(key in text or text.lstrip().startswith("-"),
                            "line %s is not about %s: %r" % (line.group(1), key, text))
        return errors


class AllErrorsAtOnceTests(ConfigErrorsTestMixin, SynchronousTestCase):
    """One run of --mode validate lists every error of a config."""

    def test_everyErrorInOneRun(self):
        """
        Envoy stops at its first error; txenvoy reports the first it meets
        (clusters are built first, as in Envoy), then every other
        unsupported field and extension, each with its path and line, and
        exits 1 as Envoy does.
        """
        path = self.writeConfig(MANY_ERRORS)
        rc, out, err = runTwistd(["--mode", "validate", "-c", path])
        self.assertEqual((rc, out), (1, ""), err)
        errors = self.assertErrorLines(path, err)
        self.assertEqual(errors, [
            "static_resources.clusters[0].common_lb_config.close_connections_on_host_set_change: "
            "unsupported field: txenvoy does not implement it yet (line 9)",
            "hds_config: unsupported field: txenvoy does not implement it yet (line 3)",
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
            "http_filters[0].typed_config.type_url: no extension for "
            "type.googleapis.com/myfilters.ApiKey; install the package that provides it "
            "as a twisted.plugin, or import it with --import MODULE (line 36)",
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
            "proxy_100_continue: unsupported field (only false): txenvoy does not "
            "implement it yet (line 26)",
            "static_resources.listeners[1].filter_chains[0].filters[0].typed_config: "
            "unsupported extension 'envoy.filters.network.mongo_proxy' (@type "
            "type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy): "
            "txenvoy does not implement it yet (line 46)",
        ])

    def test_typosAllAtOnce(self):
        """
        Misspelt fields and bad enum values are all reported by the parse,
        before anything is built; the first keeps Envoy's phrase.
        """
        path = self.writeConfig(
            "static_resources:\n"
            "  clusters:\n"
            "  - name: a\n"
            "    type: STATICC\n"
            "    conect_timeout: 1s\n"
            "    lb_policy: round_robin\n"
            "  - name: b\n"
            "    dns_lookup_family: V5_ONLY\n")
        rc, out, err = runTwistd(["--mode", "validate", "-c", path])
        self.assertEqual(rc, 1, err)
        errors = self.assertErrorLines(path, err)
        self.assertEqual(len(errors), 3, err)
        self.assertTrue(errors[0].startswith(
            "unknown enum value 'STATICC' for field type @ static_resources.clusters[0].type "
            "(envoy.config.cluster.v3.Cluster.DiscoveryType: one of STATIC, STRICT_DNS, "
            "LOGICAL_DNS, EDS, ORIGINAL_DST, in any case)"), errors[0])
        self.assertTrue(errors[0].endswith("(line 4)"), errors[0])
        self.assertIn("no such field: 'conect_timeout') has unknown fields (line 5)", errors[1])
        self.assertTrue(errors[2].startswith(
            "unknown enum value 'V5_ONLY' for field dns_lookup_family"), errors[2])

    def test_crossChecksAllAtOnce(self):
        """
        Envoy's cross-reference checks (duplicate cluster, a listener with no
        address, a route to an unknown cluster) are all reported, with
        Envoy's phrases.
        """
        path = self.writeConfig(
            "static_resources:\n"
            "  clusters:\n"
            "  - {name: c1, load_assignment: {cluster_name: c1}}\n"
            "  - {name: c1, load_assignment: {cluster_name: c1}}\n"
            "  listeners:\n"
            "  - name: noaddress\n"
            "    filter_chains: [{filters: [{name: e, typed_config: {'@type': "
            "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}}]}]\n"
            "  - name: web\n"
            "    address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n"
            "    filter_chains:\n"
            "    - filters:\n"
            "      - name: hcm\n"
            "        typed_config:\n"
            "          '@type': type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager\n"
            "          stat_prefix: web\n"
            "          route_config:\n"
            "            virtual_hosts:\n"
            "            - name: all\n"
            "              domains: ['*']\n"
            "              routes:\n"
            "              - {match: {prefix: /}, route: {cluster: nosuch}}\n"
            "          http_filters: [{name: r, typed_config: {'@type': type.googleapis.com/"
            "envoy.extensions.filters.http.router.v3.Router}}]\n")
        rc, _, err = runTwistd(["--mode", "validate", "-c", path])
        self.assertEqual(rc, 1, err)
        errors = self.assertErrorLines(path, err)
        self.assertEqual(len(errors), 3, err)
        self.assertTrue(errors[0].startswith(
            "cluster manager: duplicate cluster 'c1' @ static_resources.clusters[1]"), err)
        self.assertTrue(errors[1].startswith(
            "error adding listener named 'noaddress': address is necessary "
            "@ static_resources.listeners[0]"), err)
        self.assertTrue(errors[2].startswith("route: unknown cluster 'nosuch' @ "), err)

    def test_routesAllAtOnce(self):
        """
        A bad route does not hide the rest of its connection manager: Envoy's
        regex error (C{missing ): a((}) and an unsupported codec both come.
        """
        path = self.writeConfig(
            "static_resources:\n"
            "  listeners:\n"
            "  - name: web\n"
            "    address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n"
            "    filter_chains:\n"
            "    - filters:\n"
            "      - name: hcm\n"
            "        typed_config:\n"
            "          '@type': type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager\n"
            "          stat_prefix: web\n"
            "          codec_type: HTTP3\n"
            "          route_config:\n"
            "            virtual_hosts:\n"
            "            - name: all\n"
            "              domains: ['*']\n"
            "              routes:\n"
            "              - {match: {safe_regex: {regex: 'a(('}}, direct_response: "
            "{status: 200}}\n"
            "              - {match: {prefix: /}, direct_response: {status: 200}}\n"
            "          http_filters: [{name: r, typed_config: {'@type': type.googleapis.com/"
            "envoy.extensions.filters.http.router.v3.Router}}]\n")
        rc, _, err = runTwistd(["--mode", "validate", "-c", path])
        self.assertEqual(rc, 1, err)
        errors = self.assertErrorLines(path, err)
        self.assertEqual(len(errors), 2, err)
        self.assertIn("typed_config.codec_type: unsupported field", errors[0])
        self.assertTrue(errors[1].startswith("missing ): a(( @ "), err)
        self.assertTrue(errors[1].endswith("routes[0].match.safe_regex.regex (line 17)"), err)

    def test_examples(self):
        """
        Envoy's example configs that txenvoy cannot run yet (05, 07, 08, 12,
        13) give all their errors in one run, each with path and line; the
        first is the one txenvoy meets first, as a run that stopped there
        would show it.
        """
        names = ("05-dynamic-fs/envoy.yaml", "07-listener-filters.yaml",
                 "08-health-outlier-circuit-breakers.yaml", "12-bootstrap-ops.yaml",
                 "13-tls-mtls-upstream-tls.yaml")
        results = runTwistdAll([["--mode", "validate", "-c", name] for name in names],
                               cwd=EXAMPLES)
        for name, (rc, out, err) in zip(names, results):
            if rc == 0:
                self.assertEqual(out, "configuration '%s' OK\n" % (name,))
                continue
            self.assertEqual(rc, 1, err)
            self.assertErrorLines(name, err, open(os.path.join(EXAMPLES, name)).read())


class ExtensionErrorTests(ConfigErrorsTestMixin, SynchronousTestCase):
    """What a user is told about extensions."""

    def test_unknownTypeWithoutProto(self):
        """
        A C{typed_config} C{@type} that no installed package defines: where
        extensions come from, not Envoy's C{could not find @type}.
        """
        path = self.writeConfig(
            "static_resources:\n"
            "  listeners:\n"
            "  - name: l\n"
            "    address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n"
            "    filter_chains:\n"
            "    - filters:\n"
            "      - name: mine\n"
            "        typed_config:\n"
            "          '@type': type.googleapis.com/myfilters.ApiKey\n")
        rc, _, err = runTwistd(["--mode", "validate", "-c", path])
        self.assertEqual(rc, 1)
        self.assertEqual(self.assertErrorLines(path, err), [
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config: "
            "no extension for type.googleapis.com/myfilters.ApiKey; install the package "
            "that provides it as a twisted.plugin, or import it with --import MODULE "
            "(line 8)"])

    def test_unknownEnvoyTypeKeepsEnvoysMessage(self):
        """An C{@type} under C{envoy.} that does not exist: Envoy's own words."""
        rc, _, err = runTwistd(["--mode", "validate", "-c", "invalid/unknown-type-url.yaml"],
                               cwd=EXAMPLES)
        self.assertEqual(rc, 1)
        self.assertIn("could not find @type 'type.googleapis.com/envoy.extensions.filters."
                      "network.nosuch.v3.Nope'", err)
        self.assertNotIn("Traceback", err)

    def pluginPath(self, source):
        """A directory holding C{twisted/plugins/txenvoy_test_ext.py}."""
        directory = tempfile.mkdtemp(prefix="txenvoy-plugin-")
        self.addCleanup(shutil.rmtree, directory, True)
        plugins = os.path.join(directory, "twisted", "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "txenvoy_test_ext.py"), "w") as f:
            f.write(source)
        return directory

    def runWithPlugin(self, pluginDir, configPath):
        env = processEnv()
        env["PYTHONPATH"] = pluginDir + os.pathsep + env["PYTHONPATH"]
        p = subprocess.run(twistdCommand() + ["-n", "--pidfile=", "envoy", "--mode", "validate",
                                              "-c", configPath],
                           env=env, capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    PLUGIN = (
        "from txenvoy.config.registry import Category, FunctionFactory\n"
        "\n"
        "\n"
        "def create(config, context):\n"
        "    if not config.get('keys'):\n"
        "        raise ValueError('api key list is empty')\n"
        "    return None\n"
        "\n"
        "\n"
        "apiKey = FunctionFactory(Category.HTTP_FILTER, ['myfilters.ApiKey'], ['apikey'], create)\n"
    )

    CONFIG = (
        "static_resources:\n"
        "  listeners:\n"
        "  - name: l\n"
        "    address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n"
        "    filter_chains:\n"
        "    - filters:\n"
        "      - name: hcm\n"
        "        typed_config:\n"
        "          '@type': type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager\n"
        "          stat_prefix: web\n"
        "          route_config: {virtual_hosts: [{name: v, domains: ['*'], routes: "
        "[{match: {prefix: /}, direct_response: {status: 200}}]}]}\n"
        "          http_filters:\n"
        "          - name: apikey\n"
        "            typed_config:\n"
        "              '@type': type.googleapis.com/xds.type.v3.TypedStruct\n"
        "              type_url: type.googleapis.com/myfilters.ApiKey\n"
        "              value: {keys: []}\n"
        "          - name: router\n"
        "            typed_config: {'@type': type.googleapis.com/envoy.extensions."
        "filters.http.router.v3.Router}\n"
    )

    def test_factoryExceptionIsOneLine(self):
        """
        An exception raised by a user's extension factory at config time is
        one error line naming the config path, the factory and the
        exception: no traceback.
        """
        configPath = self.writeConfig(self.CONFIG)
        rc, out, err = self.runWithPlugin(self.pluginPath(self.PLUGIN), configPath)
        self.assertEqual((rc, out), (1, ""), err)
        self.assertEqual(self.assertErrorLines(configPath, err), [
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
            "http_filters[0]: the extension for type.googleapis.com/myfilters.ApiKey "
            "(twisted.plugins.txenvoy_test_ext.create) failed to build: ValueError: api key list is empty "
            "(line 13)"])


class StartUpErrorTests(ConfigErrorsTestMixin, SynchronousTestCase):
    """Errors met when the server starts, not when the config is read."""

    def test_adminPortInUse(self):
        """
        Envoy: C{cannot bind '127.0.0.1:PORT': Address already in use}, exit
        1. txenvoy says it in one line, as for a busy listener port.
        """
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        path = self.writeConfig(
            "admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}\n"
            "static_resources: {}\n" % (port,))
        rc, out, err = runTwistd(["-c", path], timeout=30)
        self.assertEqual(rc, 1, err)
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].endswith(
            "error initializing config '%s': admin.address: cannot bind "
            "'127.0.0.1:%d': Address already in use" % (path, port)), err)
