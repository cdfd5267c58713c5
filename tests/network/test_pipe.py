"""
Tests for L{txenvoy.network.pipe}: Envoy's C{pipe} addresses.
"""

import os
import shutil
import socket
import stat
import tempfile

from twisted.internet.address import UNIXAddress
from twisted.trial.unittest import SynchronousTestCase

from envoy.config.core.v3 import address_pb2
from txenvoy.config.errors import ConfigError
from txenvoy.network.address import addressTuple, formatAddress
from txenvoy.network.pipe import PipeAddress, bindPipe, pipeAddress, pipeName


class PipeAddressTests(SynchronousTestCase):

    def test_path(self):
        address = pipeAddress(address_pb2.Pipe(path="/run/x.sock", mode=0o600), "p")
        self.assertEqual((address.path, address.mode, address.abstract, address.sockaddr),
                         ("/run/x.sock", 0o600, False, "/run/x.sock"))
        self.assertEqual(formatAddress(address), "/run/x.sock")

    def test_abstract(self):
        """C{@name} is Linux's abstract namespace: a leading NUL byte."""
        address = pipeAddress(address_pb2.Pipe(path="@name"), "p")
        self.assertTrue(address.abstract)
        self.assertEqual(address.sockaddr, "\0name")
        self.assertEqual(str(address), "@name")

    def test_abstractWithMode(self):
        """Envoy: C{Cannot set mode for Abstract AF_UNIX sockets}."""
        e = self.assertRaises(ConfigError, pipeAddress,
                              address_pb2.Pipe(path="@name", mode=0o600), "a.pipe")
        self.assertEqual(str(e), "Cannot set mode for Abstract AF_UNIX sockets @ a.pipe.mode")

    def test_tooLong(self):
        """Envoy: C{Path "..." exceeds maximum UNIX domain socket path size of 108.}"""
        path = "/" + "a" * 120
        e = self.assertRaises(ConfigError, pipeAddress, address_pb2.Pipe(path=path), "a.pipe")
        self.assertEqual(str(e), 'Path "%s" exceeds maximum UNIX domain socket path size of '
                                 '108. @ a.pipe.path' % (path,))

    def test_names(self):
        """A connection's ends, as Envoy prints them: path, @name, or empty."""
        self.assertEqual(pipeName(b"\0abc"), "@abc")
        self.assertEqual(pipeName("/x"), "/x")
        self.assertEqual(pipeName(None), "")
        self.assertEqual(addressTuple(UNIXAddress(b"/x.sock")), (PipeAddress("/x.sock"), 0))
        self.assertEqual(addressTuple(UNIXAddress(None)), (PipeAddress(""), 0))


class BindPipeTests(SynchronousTestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="txenvoy-pipe-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def test_modeAndStaleFile(self):
        """
        As Envoy, a stale file at the path is replaced and the mode is
        applied to the new socket.
        """
        path = os.path.join(self.dir, "s.sock")
        with open(path, "w") as f:
            f.write("stale")
        sock = bindPipe(PipeAddress(path, 0o640), 5)
        self.addCleanup(sock.close)
        mode = os.stat(path).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(stat.S_IMODE(mode), 0o640)
        client = socket.socket(socket.AF_UNIX)
        self.addCleanup(client.close)
        client.connect(path)

    def test_unbindable(self):
        """A path in a missing directory raises the C{OSError} Envoy reports."""
        e = self.assertRaises(OSError, bindPipe,
                              PipeAddress(os.path.join(self.dir, "no", "s.sock")), 5)
        self.assertEqual(e.strerror, "No such file or directory")
