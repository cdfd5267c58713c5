"""
Recording a transport's C{writeSequence} calls, for the tests that check
the HTTP/1.1 codecs write a large chunk between its framing, uncopied.
"""


def recordSequences(transport):
    """
    Record the buffers of each C{writeSequence} call on C{transport} (a
    C{StringTransport}), which still writes them.

    @return: the list each call's buffers are appended to.
    """
    sequences = []
    writeSequence = transport.writeSequence

    def recording(buffers):
        sequences.append(list(buffers))
        writeSequence(buffers)
    transport.writeSequence = recording
    return sequences
