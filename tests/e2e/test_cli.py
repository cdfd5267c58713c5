"""
End-to-end: the C{twistd envoy} command line, with Envoy's names, messages
and exit codes.
"""

import json
import os
import tempfile

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.harness import EXAMPLES, REPO, Envoy, freePort, runTwistd, runTwistdAll


class CommandLineTests(SynchronousTestCase):

    def test_pluginIsVisible(self):
        """twistd finds the C{envoy} subcommand."""
        self.assertIn("envoy", {p.tapname for p in getPlugins(IServiceMaker)})

    def test_version(self):
        rc, out, _ = runTwistd(["--version"])
        self.assertEqual(rc, 0)
        self.assertIn("version: txenvoy/", out)

    # Envoy prints usage errors on stderr, one line, exit 1.

    def test_unknownFlag(self):
        rc, out, err = runTwistd(["--bogus-flag"])
        self.assertEqual((rc, out), (1, ""))
        self.assertEqual(err, "error: option --bogus-flag not recognized "
                              "(see: twistd envoy --help)\n")

    def test_unknownMode(self):
        rc, out, err = runTwistd(["-c", "conf/demo.yaml", "--mode", "bogus"])
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("error: unknown mode 'bogus'", err)

    def test_badLogLevel(self):
        rc, out, err = runTwistd(["-c", "conf/demo.yaml", "-l", "bogus"])
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("error: invalid log level specified 'bogus'", err)

    def test_badIpVersion(self):
        """Envoy: C{error: unknown IP address version 'v5'}, rc 1."""
        rc, out, err = runTwistd(["-c", "conf/demo.yaml", "--local-address-ip-version", "v5"])
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("error: unknown IP address version 'v5'", err)

    def test_noConfig(self):
        """
        No C{-c}: one line saying a config is needed, in the user's terms
        (Envoy's own names C{Options::configProto()}), exit 1 as Envoy.
        """
        rc, out, err = runTwistd([])
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertEqual(
            err,
            "twistd envoy: no config given: pass -c/--config-path FILE (an Envoy v3 "
            "bootstrap, YAML or JSON) or --config-yaml TEXT (see: twistd envoy --help)\n")

    def test_help(self):
        """C{--help} prints one usage block, with one synopsis line, and exits 0."""
        rc, out, err = runTwistd(["--help"])
        self.assertEqual((rc, err), (0, ""))
        self.assertEqual(out.count("Usage:"), 1)
        self.assertTrue(out.startswith("Usage: twistd [options] envoy [options]\n"), out)
        self.assertIn("--config-path=", out)

    def test_missingFile(self):
        rc, _, err = runTwistd(["-c", "/nonexistent.yaml"])
        self.assertEqual(rc, 1)
        self.assertIn("Invalid path: /nonexistent.yaml", err)
        self.assertNotIn("Traceback", err)

    def test_configYamlMergedOverFile(self):
        """
        Envoy: --config-yaml is merged over -c; repeated fields are appended
        (one cluster in each gives two).
        """
        extra = ("static_resources: {clusters: [{name: extra, type: STATIC, "
                 "load_assignment: {cluster_name: extra}}]}")
        rc, out, err = runTwistd(["--mode", "validate", "-c", "06-tcp-proxy.yaml",
                                  "--config-yaml", extra], cwd=EXAMPLES)
        self.assertEqual((rc, out), (0, "configuration '06-tcp-proxy.yaml' OK\n"), err)
        rc, _, err = runTwistd(["--mode", "validate", "-c", "06-tcp-proxy.yaml",
                                "--config-yaml", extra.replace("extra", "backend_a")],
                               cwd=EXAMPLES)
        self.assertEqual(rc, 1)
        self.assertIn("duplicate cluster 'backend_a'", err)

    def test_validateNeverBinds(self):
        """validate mode builds everything but binds nothing: a busy port is fine."""
        import socket
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        config = ("static_resources: {listeners: [{name: l, address: {socket_address: "
                  "{address: 127.0.0.1, port_value: %d}}, filter_chains: [{filters: [{name: e, "
                  "typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.network."
                  "echo.v3.Echo}}]}]}]}" % (busy.getsockname()[1],))
        rc, out, err = runTwistd(["--mode", "validate", "--config-yaml", config])
        self.assertEqual((rc, out), (0, "configuration '' OK\n"), err)

    def test_unsupportedFieldNamed(self):
        """A valid Envoy field txenvoy lacks: exit 1 naming its path."""
        config = ("node: {id: node1, cluster: c1}\nhds_config: {api_type: GRPC, "
                  "transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: x}}]}")
        rc, _, err = runTwistd(["--mode", "validate", "--config-yaml", config])
        self.assertEqual(rc, 1)
        self.assertIn("hds_config: unsupported field", err)

    def test_invalidCorpus(self):
        """Every broken config of Envoy's corpus exits 1 with no traceback."""
        names = [name for name in sorted(os.listdir(os.path.join(EXAMPLES, "invalid")))
                 if name.endswith(".yaml") and not name.startswith("lds-path-missing")]
        results = runTwistdAll([["--mode", "validate", "-c", "invalid/" + name]
                                for name in names], cwd=EXAMPLES)
        self.assertTrue(names)
        for name, (rc, out, err) in zip(names, results):
            self.assertEqual((rc, out), (1, ""), name)
            self.assertNotIn("Traceback", err, name)
            self.assertIn("error initializing configuration 'invalid/%s'" % (name,), err)


del REPO


class AllowUnknownStaticFieldsTests(SynchronousTestCase):
    """
    Envoy 1.40 with --allow-unknown-static-fields: the config loads, each
    unknown field is a [warning][config] "Unknown field: ..." line, and
    server.static_unknown_fields counts 1 for the file.
    """

    def config(self, adminPort):
        return json.dumps({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": adminPort}}},
            "bogus_top": 1,
            "static_resources": {"clusters": [{
                "name": "c", "bogus_cluster_field": True, "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "c"}}]},
        })

    def test_serve(self):
        adminPort = freePort()
        envoy = Envoy(self.config(adminPort), args=("--allow-unknown-static-fields",),
                      adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        self.assertEqual(envoy.stats()["server.static_unknown_fields"], 1)
        err = envoy.output()[1]
        self.assertIn("[warning][config] Unknown field: type envoy.config.bootstrap.v3.Bootstrap "
                      "reason INVALID_ARGUMENT: invalid JSON in envoy.config.bootstrap.v3."
                      "Bootstrap: message envoy.config.bootstrap.v3.Bootstrap: no such field: "
                      "'bogus_top'", err)
        self.assertIn("@ static_resources.clusters[0]: message envoy.config.cluster.v3.Cluster: "
                      "no such field: 'bogus_cluster_field'", err)

    def test_withoutTheFlagAnError(self):
        path = os.path.join(tempfile.mkdtemp(), "envoy.json")
        with open(path, "w") as f:
            f.write(self.config(freePort()))
        rc, _, err = runTwistd(["--mode", "validate", "-c", path])
        self.assertEqual(rc, 1)
        self.assertIn("no such field: 'bogus_top'", err)
        rc, out, err = runTwistd(["--mode", "validate", "-c", path,
                                  "--allow-unknown-static-fields"])
        self.assertEqual((rc, out), (0, "configuration '%s' OK\n" % (path,)), err)
        self.assertIn("no such field: 'bogus_cluster_field'", err)


class ServiceZoneTests(SynchronousTestCase):

    def test_serviceZone(self):
        """Envoy: --service-zone fills node.locality.zone (/server_info)."""
        adminPort = freePort()
        envoy = Envoy(json.dumps({"admin": {"address": {"socket_address": {
            "address": "127.0.0.1", "port_value": adminPort}}}}),
            args=("--service-zone", "z1"), adminPort=adminPort)
        self.addCleanup(envoy.stop)
        envoy.waitReady()
        info = json.loads(envoy.admin("/server_info")[1])
        self.assertEqual(info["node"]["locality"]["zone"], "z1")
        self.assertEqual(info["command_line_options"]["service_zone"], "z1")
