# -*- test-case-name: tests.network.test_pipe -*-
"""
Unix domain socket addresses: Envoy's C{pipe} (C{path}, C{mode}; a path
starting with C{@} names a socket in Linux's abstract namespace).

Envoy names a pipe everywhere by its path as written: the listener's stats
are C{listener./run/envoy.sock.*} (C{listener.@name.*} for an abstract
one), C{/listeners} prints C{name::/run/envoy.sock}, C{/clusters} prints a
host as C{c::/run/up.sock::cx_total::1}. A connection accepted on a pipe
has the listener's path as its local address and the peer's (usually
unnamed, so empty) as its remote one, both with port 0, so the address
tuples that IP connections use keep their shape.
"""

import os
import socket

import attr

from txenvoy.config.errors import ConfigError
from txenvoy.config.fields import checkFields

#: sun_path's size on Linux, as Envoy's message gives it.
MAX_PATH = 108


@attr.s(frozen=True, slots=True)
class PipeAddress:
    """
    A compiled C{envoy.config.core.v3.Pipe}.

    @ivar path: the path as written (C{@name} for an abstract socket).
    @ivar mode: the file mode to set on a bound path socket, or 0.
    """

    path = attr.ib()
    mode = attr.ib(default=0)

    @property
    def abstract(self):
        """Whether this names a socket in the abstract namespace."""
        return self.path.startswith("@")

    @property
    def sockaddr(self):
        """The address C{socket.bind} and C{connect} take."""
        return "\0" + self.path[1:] if self.abstract else self.path

    def __str__(self):
        return self.path


def pipeAddress(pipe, path):
    """
    Compile an C{envoy.config.core.v3.Pipe}, with Envoy's checks.

    @param path: the field path of the C{pipe}, for messages.
    @raise ConfigError: Envoy's message for a mode on an abstract socket or
        a path too long for C{sun_path}.
    """
    checkFields(pipe, ("path", "mode"), path)
    address = PipeAddress(pipe.path, pipe.mode)
    if address.abstract and pipe.mode:
        raise ConfigError("Cannot set mode for Abstract AF_UNIX sockets @ %s.mode" % (path,))
    if len(address.sockaddr.encode("utf-8")) >= MAX_PATH:
        raise ConfigError('Path "%s" exceeds maximum UNIX domain socket path size of %d. @ %s'
                          % (pipe.path, MAX_PATH, path + ".path"))
    return address


def bindPipe(address, backlog):
    """
    Bind and listen on a Unix domain socket, as Envoy does: a stale file at
    the path is removed first, and C{mode} is applied to the new one.

    @return: the listening, non-blocking socket.
    @raise OSError: when it cannot be bound.
    """
    if not address.abstract:
        try:
            os.unlink(address.path)
        except OSError:
            # Nothing there, or something bind will refuse with its errno.
            pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(address.sockaddr)
        if address.mode and not address.abstract:
            os.chmod(address.path, address.mode)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def pipeName(sockname):
    """
    The name of one end of a Unix connection, as Envoy prints it: the path,
    C{@name} for an abstract one, C{""} for an unnamed one.
    """
    if isinstance(sockname, bytes):
        if sockname.startswith(b"\0"):
            return "@" + sockname[1:].decode("utf-8", "replace")
        return sockname.decode("utf-8", "replace")
    if sockname and sockname.startswith("\0"):
        return "@" + sockname[1:]
    return sockname or ""
