# -*- test-case-name: tests.extensions.bootstrap.test_internal_listener -*-
"""
C{envoy.bootstrap.internal_listener}: turns on internal listeners
(C{internal_listener} on a listener), reached by cluster endpoints with an
C{envoy_internal_address} through in-memory connections
(L{txenvoy.network.user_space}).

Its one field, C{buffer_size_kb}, is how many unread bytes each end of an
internal connection holds; the listener reads it from the bootstrap when
it is compiled (L{txenvoy.network.user_space.internalBufferSize}), so this
object only records it.
"""

import attr

from txenvoy.config.registry import Category, extension
from txenvoy.network.user_space import DEFAULT_BUFFER_SIZE, INTERNAL_LISTENER_TYPE


@attr.s(frozen=True)
class InternalListenerExtension:
    """The compiled bootstrap extension: C{bufferSize} in bytes."""

    bufferSize = attr.ib()


@extension(Category.BOOTSTRAP, INTERNAL_LISTENER_TYPE, "envoy.bootstrap.internal_listener",
           fields=("buffer_size_kb",))
def createInternalListener(message, context):
    if message.HasField("buffer_size_kb"):
        return InternalListenerExtension(message.buffer_size_kb.value * 1024)
    return InternalListenerExtension(DEFAULT_BUFFER_SIZE)
