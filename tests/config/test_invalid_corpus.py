"""
The conformance corpus: Envoy 1.40's verdict on each config, reproduced.

C{shared/envoy-examples/invalid/expected.txt} records what
C{envoy --mode validate} printed for every broken config there. Each one
must fail to load here with a L{ConfigError} carrying Envoy's key phrase
(protobuf scatters random spaces through Envoy's messages, so the phrases
are matched, not the whole text). Every valid example must load.
"""

import glob
import os

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.config.errors import ConfigError
from txenvoy.config.loader import loadBootstrap

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "envoy-examples"))
INVALID = os.path.join(EXAMPLES, "invalid")

# file -> phrases found both in Envoy's message (expected.txt) and in ours.
KEY_PHRASES = {
    "bad-duration.yaml": [
        "Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in "
        "envoy.config.bootstrap.v3.Bootstrap @ static_resources.clusters[0].connect_timeout: "
        "message google.protobuf.Duration",
        "duration must end with a single 's'"],
    "bad-enum.yaml": ["unknown enum value", "'STATICX'"],
    "bad-yaml-syntax.yaml": ["error at line 4, column 4: illegal block entry"],
    "duplicate-cluster.yaml": ["cluster manager: duplicate cluster 'c1'"],
    "duplicate-listener-address.yaml": [
        "error adding listener: 'l2' has duplicate address '127.0.0.1:10040' as existing "
        "listener, to check if the listener has duplicated addresses with other listeners or "
        "'enable_reuse_port' is set to 'false' for the listener"],
    "dynamic-without-node.yaml": [
        "type.googleapis.com/envoy.config.cluster.v3.Cluster: node 'id' and 'cluster' are "
        "required. Set it either in 'node' config or via --service-node and "
        "--service-cluster options."],
    "empty-cluster-name.yaml": [
        "Proto constraint validation failed (",
        "ClusterValidationError.Name: value length must be at"],
    "listener-missing-address.yaml": ["error adding listener named 'l1': address is necessary"],
    "missing-stat-prefix.yaml": [
        "Proto constraint validation failed (HttpConnectionManagerValidationError.StatPrefix: "
        "value length must be at least 1 characters)"],
    "route-unknown-cluster.yaml": ["route: unknown cluster 'nosuch'"],
    "router-without-typed-config.yaml": [
        "Didn't find a registered implementation for 'envoy.filters.http.router' "
        "with type URL: ''"],
    "unknown-field.yaml": [
        "Protobuf message (type envoy.config.bootstrap.v3.Bootstrap reason INVALID_ARGUMENT: "
        "invalid JSON in envoy.config.bootstrap.v3.Bootstrap @ static_resources.listeners[0]: "
        "message envoy.config.listener.v3.Listener",
        "no such field: 'bogus_field') has unknown fields"],
    "unknown-type-url.yaml": [
        "Unable to parse JSON as proto (INVALID_ARGUMENT: could not find @type "
        "'type.googleapis.com/envoy.extensions.filters.network.nosuch.v3.Nope')"],
    "yaml-bool-node-id.yaml": [
        "Unable to parse JSON as proto (INVALID_ARGUMENT: invalid JSON in "
        "envoy.config.bootstrap.v3.Bootstrap @ node.id: string",
        "unexpected character: 'f'; expected '\"'"],
}

# Phrases of ours that Envoy's (cut or differently worded) record lacks.
EXTRA_PHRASES = {
    "bad-enum.yaml": ["unknown enum value 'STATICX' for field type "
                      "@ static_resources.clusters[0].type"],
    "empty-cluster-name.yaml": ["value length must be at least 1 characters",
                                "@ static_resources.clusters[0].name"],
    "missing-stat-prefix.yaml": ["typed_config.stat_prefix"],
    "unknown-type-url.yaml": ["@ static_resources.listeners[0].filter_chains[0].filters[0]"
                              ".typed_config"],
    "route-unknown-cluster.yaml": ["routes[0].route.cluster"],
}


def readExpected():
    """
    Parse expected.txt into C{{file: (rc, message)}}, collapsing the random
    whitespace protobuf inserts.
    """
    expected = {}
    with open(os.path.join(INVALID, "expected.txt")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, rest = line.split(" ", 1)
            rc, _, message = rest.strip().partition(" ")
            expected[name] = (int(rc.split("=", 1)[1]), " ".join(message.split()))
    return expected


class InvalidCorpusTests(SynchronousTestCase):
    """Every config in invalid/ gets Envoy's verdict."""

    def setUp(self):
        self.assertTrue(os.path.isdir(INVALID),
                        "the conformance corpus is missing: %s" % (INVALID,))
        self.expected = readExpected()

    def test_everyFileRecorded(self):
        """
        Every broken config has Envoy's record and key phrases here, so a
        new case cannot slip through untested.
        """
        files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(INVALID, "*.yaml")))
        self.assertTrue(files)
        self.assertEqual(files, sorted(self.expected))
        failing = sorted(name for name, (rc, _) in self.expected.items() if rc != 0)
        self.assertEqual(failing, sorted(KEY_PHRASES))

    def test_phrasesAreEnvoys(self):
        """
        The phrases looked for are Envoy's own words.
        """
        for name, phrases in KEY_PHRASES.items():
            envoyMessage = self.expected[name][1]
            for phrase in phrases:
                self.assertIn(" ".join(phrase.split()), envoyMessage, name)

    def test_invalidConfigsFail(self):
        """
        Each config Envoy refused is refused with Envoy's key phrases and a
        one-line message.
        """
        for name, phrases in sorted(KEY_PHRASES.items()):
            path = os.path.join(INVALID, name)
            error = self.assertRaises(ConfigError, loadBootstrap, path)
            self.assertNotIn("\n", error.message, name)
            for phrase in phrases + EXTRA_PHRASES.get(name, []):
                self.assertIn(phrase, error.message, name)

    def test_serveOnlyErrorLoads(self):
        """
        Envoy's validate mode passes lds-path-missing-serve-only.yaml (the
        missing LDS file only fails serve mode); it loads here too.
        """
        for name, (rc, _) in self.expected.items():
            if rc == 0:
                bootstrap = loadBootstrap(os.path.join(INVALID, name))
                self.assertTrue(bootstrap.HasField("dynamic_resources"), name)
        self.assertEqual(self.expected["lds-path-missing-serve-only.yaml"][0], 0)

    def test_relativePath(self):
        """
        A path relative to the working directory works, as Envoy's does.
        """
        cwd = os.getcwd()
        os.chdir(EXAMPLES)
        self.addCleanup(os.chdir, cwd)
        error = self.assertRaises(ConfigError, loadBootstrap, "invalid/duplicate-cluster.yaml")
        self.assertIn("duplicate cluster 'c1'", error.message)


class ValidCorpusTests(SynchronousTestCase):
    """Every example Envoy validated loads."""

    def test_examplesLoad(self):
        """
        All of envoy-examples/*.yaml and 05-dynamic-fs/envoy.yaml load.
        """
        self.assertTrue(os.path.isdir(EXAMPLES),
                        "the conformance corpus is missing: %s" % (EXAMPLES,))
        paths = sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml")))
        paths.append(os.path.join(EXAMPLES, "05-dynamic-fs", "envoy.yaml"))
        self.assertGreaterEqual(len(paths), 15)
        for path in paths:
            try:
                bootstrap = loadBootstrap(path)
            except ConfigError as e:
                self.fail("%s: %s" % (os.path.basename(path), e.message))
            self.assertTrue(bootstrap.ListFields(), path)

    def test_frontProxyContent(self):
        """
        02-front-proxy.yaml: two unnamed listeners, two clusters.
        """
        bootstrap = loadBootstrap(os.path.join(EXAMPLES, "02-front-proxy.yaml"))
        self.assertEqual(len(bootstrap.static_resources.listeners), 2)
        self.assertEqual(len(bootstrap.static_resources.clusters), 2)
