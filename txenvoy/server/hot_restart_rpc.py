# -*- test-case-name: tests.server.test_hot_restart_rpc -*-
"""
The hot restart channel (Envoy's C{HotRestartingBase::RpcStream}): Unix
datagram sockets named from the base id as Envoy names them, carrying
length-prefixed messages in chunks of at most 4096 bytes, with a listening
socket's descriptor passed beside a reply (C{SCM_RIGHTS}).

Envoy's names: the process of epoch C{E} binds
C{@envoy_domain_socket_parent_<10*base_id + E%3>} (where its child finds it)
and C{@envoy_domain_socket_child_<10*base_id + E%3>} (where its parent
answers). The C{@} is Linux's abstract namespace: nothing in the file
system to clean up. The messages are Envoy's C{HotRestartMessage} with the
field names of its JSON form (C{{"request": {"pass_listen_socket":
{...}}}}), encoded as JSON: txenvoy has no shared memory, so it cannot hot
restart from or to an Envoy binary anyway.
"""

import errno
import json
import socket
import struct
import time

#: Envoy's C{MaxSendmsgSize}: one datagram of a message at most.
MAX_SENDMSG_SIZE = 4096

#: Envoy's C{MaxConcurrentProcesses}: socket names repeat every 3 epochs.
MAX_CONCURRENT_PROCESSES = 3

#: Envoy's default C{--socket-path}.
DEFAULT_SOCKET_PATH = "@envoy_domain_socket"

#: Envoy retries a send the other side refuses 10 times, 1 s apart.
SENDMSG_MAX_RETRIES = 10
CONNECTION_REFUSED_RETRY_DELAY = 1.0

_LENGTH = struct.Struct(">Q")


class HotRestartError(Exception):
    """The hot restart channel failed; the message says how, in Envoy's words."""


class PeerClosed(HotRestartError):
    """The other end of a connected channel went away."""


class DomainSocketInUse(HotRestartError):
    """Another process holds this base id's socket (Envoy's C{HotRestartDomainSocketInUseException})."""


def domainSocketAddress(baseId, epoch, role, socketPath=DEFAULT_SOCKET_PATH):
    """
    The address Envoy's C{createDomainSocketAddress} gives C{role}
    (C{"parent"} or C{"child"}) of C{epoch}, as a C{bind}/C{sendto} argument.
    """
    name = "%s_%s_%d" % (socketPath, role, baseId * 10 + epoch % MAX_CONCURRENT_PROCESSES)
    if name.startswith("@"):
        return "\0" + name[1:]
    return name


def encode(message):
    """A message as the datagrams that carry it: an 8-byte length, then the body."""
    body = json.dumps(message, separators=(",", ":"), sort_keys=True).encode("utf-8")
    data = _LENGTH.pack(len(body)) + body
    return [data[i:i + MAX_SENDMSG_SIZE] for i in range(0, len(data), MAX_SENDMSG_SIZE)]


class MessageAssembler:
    """
    Joins datagrams back into messages, as Envoy's C{receiveHotRestartMessage}
    does; a descriptor passed beside a chunk goes with its message.
    """

    def __init__(self):
        self._buffer = b""
        self._expected = None
        self._fds = []

    def feed(self, data, fds=()):
        """
        Add one datagram.

        @return: C{(message, fds)} once a whole message arrived, else C{None}.
        @raise HotRestartError: for a fragment no sender of this channel
            would send.
        """
        self._fds.extend(fds)
        self._buffer += data
        if self._expected is None:
            if len(self._buffer) < _LENGTH.size:
                self.reset()
                raise HotRestartError("received a brokenly tiny message fragment.")
            self._expected = _LENGTH.unpack_from(self._buffer)[0]
        total = _LENGTH.size + self._expected
        if len(self._buffer) > total:
            self.reset()
            raise HotRestartError(
                "received a length+protobuf message not aligned to start of sendmsg().")
        if len(self._buffer) < total:
            return None
        body, fds = self._buffer[_LENGTH.size:], self._fds
        self._buffer, self._expected, self._fds = b"", None, []
        try:
            return json.loads(body.decode("utf-8")), fds
        except ValueError:
            for fd in fds:
                _closeFd(fd)
            raise HotRestartError("failed to parse a HotRestartMessage.")

    def reset(self):
        for fd in self._fds:
            _closeFd(fd)
        self._buffer, self._expected, self._fds = b"", None, []


def _closeFd(fd):
    try:
        socket.close(fd)
    except OSError:
        pass


class RpcStream:
    """
    One datagram (or sequenced-packet) socket of the channel, non-blocking,
    with blocking sends and both blocking and non-blocking receives.
    L{bound} gives hot restart's named sockets; a connected socket (one end
    of a C{socketpair}) sends with no address.

    @ivar socket: the C{socket.socket}.
    """

    def __init__(self, sock, baseId=0, sleep=time.sleep):
        self.socket = sock
        self.baseId = baseId
        self._sleep = sleep
        self._assembler = MessageAssembler()
        self.socket.setblocking(False)

    @classmethod
    def bound(cls, baseId, epoch, role, socketPath=DEFAULT_SOCKET_PATH, sleep=time.sleep):
        """
        The socket of C{role} for C{epoch}, bound to its Envoy name.

        @raise DomainSocketInUse: with Envoy's message, when another
            process holds it.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = domainSocketAddress(baseId, epoch, role, socketPath)
        try:
            sock.bind(address)
        except OSError as e:
            sock.close()
            message = ("unable to bind domain socket with base_id=%d, id=%d, errno=%d "
                       "(see --base-id option)"
                       % (baseId * 10, epoch % MAX_CONCURRENT_PROCESSES, e.errno))
            if e.errno == errno.EADDRINUSE:
                raise DomainSocketInUse(message)
            raise HotRestartError(message)
        return cls(sock, baseId, sleep)

    def fileno(self):
        return self.socket.fileno()

    def close(self):
        self._assembler.reset()
        self.socket.close()

    def send(self, address, message, fd=None):
        """
        Send one message (blocking) to C{address} (C{None} on a connected
        socket), retrying while the peer refuses as
        Envoy does (C{hot restart sendmsg() connection refused, retrying}).

        @param fd: a descriptor to pass with it (the message must fit one
            datagram, as in Envoy).
        @raise HotRestartError: when the peer is still not there.
        """
        chunks = encode(message)
        if fd is not None and len(chunks) != 1:
            raise HotRestartError("an fd passing message was too long for one sendmsg().")
        ancillary = []
        if fd is not None:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
        self.socket.setblocking(True)
        try:
            for chunk in chunks:
                for attempt in range(SENDMSG_MAX_RETRIES):
                    try:
                        if address is None:
                            self.socket.sendmsg([chunk], ancillary)
                        else:
                            self.socket.sendmsg([chunk], ancillary, 0, address)
                        break
                    except (ConnectionRefusedError, FileNotFoundError) as e:
                        if attempt == SENDMSG_MAX_RETRIES - 1:
                            raise HotRestartError(
                                "hot restart sendmsg() failed: errno %d (%s): is the "
                                "previous epoch running with the same --base-id?"
                                % (e.errno, e.strerror))
                        self.onRetry()
                        self._sleep(CONNECTION_REFUSED_RETRY_DELAY)
        finally:
            self.socket.setblocking(False)

    def onRetry(self):
        """Called before each wait for a peer that refused a send."""

    def receive(self, timeout=None):
        """
        The next whole message as C{(message, fds)}: with C{timeout}
        C{None}, C{None} at once when none is waiting; otherwise wait that
        many seconds and raise L{HotRestartError} when none came.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HotRestartError("no hot restart reply in %g s" % (timeout,))
                self.socket.settimeout(left)
            try:
                data, fds, flags, _ = socket.recv_fds(self.socket, MAX_SENDMSG_SIZE, 1)
            except (BlockingIOError, socket.timeout):
                if deadline is None:
                    return None
                continue
            finally:
                if deadline is not None:
                    self.socket.setblocking(False)
            if not data and not fds:
                # A sequenced-packet peer closed its end.
                raise PeerClosed("the other end closed the channel")
            whole = self._assembler.feed(data, fds)
            if whole is not None:
                return whole
