"""
A plain, deterministic mutator: the test suite drives every fuzz target
with it for a bounded number of inputs, without atheris' instrumentation.
Inputs are the seeds themselves, then seeds changed by a few random edits
(byte changes, insertions of bytes and of tokens the parsers care about,
deletions, repeats, splices with another seed).
"""

import random

TOKENS = (
    b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\t", b":", b";", b",", b"%", b"%%", b"(", b")",
    b"{", b"}", b"[", b"]", b"\"", b"'", b"*", b"?", b"#", b"/", b"\\", b"-1", b"0",
    b"4294967296", b"65535", b"\xff", b"\x80", b"\xc3\x28", b"\r\n\r\n",
    b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n",
    b"Host: a\r\n", b"%START_TIME(", b"%REQ(", b"\r\n\r\n\x00\r\nQUIT\n", b"PROXY ",
    b"\x16\x03\x01", b"@type", b"typed_config", b"- ", b": {", b"&a", b"*a", b"!!",
)


def mutations(seeds, rng):
    """
    Yield the seeds, then mutated seeds, forever.

    @param seeds: a non-empty list of C{bytes}.
    @param rng: a L{random.Random}.
    """
    for seed in seeds:
        yield seed
    while True:
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            mutateOnce(data, seeds, rng)
        yield bytes(data)


def mutateOnce(data, seeds, rng):
    """Apply one random edit to C{data} (a C{bytearray}) in place."""
    size = len(data)
    pos = rng.randint(0, size)
    op = rng.randrange(7)
    if op == 0 and size:
        data[min(pos, size - 1)] = rng.randrange(256)
    elif op == 1 and size:
        data[min(pos, size - 1)] ^= 1 << rng.randrange(8)
    elif op == 2:
        data[pos:pos] = bytes([rng.randrange(256)])
    elif op == 3:
        data[pos:pos] = rng.choice(TOKENS)
    elif op == 4 and size:
        del data[pos:pos + rng.randint(1, 16)]
    elif op == 5 and size:
        start = rng.randrange(size)
        data[pos:pos] = data[start:start + rng.randint(1, 32)] * rng.randint(1, 4)
    else:
        other = rng.choice(seeds)
        start = rng.randint(0, len(other))
        data[pos:] = other[start:]


def run(testOneInput, seeds, count, seconds, clock, seed=0):
    """
    Call C{testOneInput} on C{count} inputs from L{mutations}, or as many
    as fit in C{seconds} of C{clock()} (every seed runs regardless).

    @return: the number of inputs run.
    """
    rng = random.Random(seed)
    deadline = clock() + seconds
    done = 0
    for data in mutations(seeds, rng):
        if done >= count or (done >= len(seeds) and clock() > deadline):
            break
        try:
            testOneInput(data)
        except BaseException as e:
            raise AssertionError("input %r: %s: %s" % (data, type(e).__name__, e)) from e
        done += 1
    return done
