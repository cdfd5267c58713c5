"""
What the fuzz targets share: the failure they raise for a broken
invariant, and a reader that turns the fuzzer's bytes into choices.
"""


class FuzzFailure(AssertionError):
    """An input made the code under test break one of its promises."""


def check(condition, message, *args):
    """Raise L{FuzzFailure} with C{message % args} unless C{condition}."""
    if not condition:
        raise FuzzFailure(message % args if args else message)


class FuzzInput:
    """
    Takes choices from the front of a fuzzer's input, the rest being the
    payload. Reading past the end gives zeros, so every input is usable and
    short inputs mean the default choices.
    """

    def __init__(self, data):
        self._data = data
        self._pos = 0

    def byte(self):
        """The next byte, 0 when none is left."""
        if self._pos >= len(self._data):
            return 0
        b = self._data[self._pos]
        self._pos += 1
        return b

    def flag(self):
        """The next byte's low bit."""
        return bool(self.byte() & 1)

    def choice(self, options):
        """One of C{options}, chosen by the next byte."""
        return options[self.byte() % len(options)]

    def take(self, n):
        """Up to C{n} next bytes."""
        out = self._data[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def rest(self):
        """Every byte not yet read."""
        out = self._data[self._pos:]
        self._pos = len(self._data)
        return out

    def pieces(self, maxCuts=7):
        """
        The rest of the input, cut into reads: the next byte gives the
        number of cuts, one byte each the length of a read (the last read
        takes what is left).
        """
        sizes = [self.byte() + 1 for _ in range(self.byte() % (maxCuts + 1))]
        data = self.rest()
        out = []
        pos = 0
        for size in sizes:
            if pos >= len(data):
                break
            out.append(data[pos:pos + size])
            pos += size
        if pos < len(data) or not out:
            out.append(data[pos:])
        return out
