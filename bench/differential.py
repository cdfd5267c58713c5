"""
Differential fuzzing of the HTTP/1.1 request edge: mutated requests sent
to real Envoy (C{.venv/bin/envoy}) and to C{twistd -n envoy} on the same
config, each in front of its own small origin on 127.0.0.1. Not a test.

    python bench/differential.py [--count 20000] [--seed 1] [--workers 16]
                                 [--timeout 1.0] [--examples 1] [--show N]

Each input is a seed request (a small corpus of valid requests) with one
to three mutations applied: bytes and separators inserted, line endings
changed, headers added or repeated, methods, versions, targets and chunk
lines replaced. Every input carries a tag in its target (C{/zq<n>zq/}); a
mutation that damages the tag is drawn again, so whatever reaches an
origin is attributed to its input. Each input goes to both proxies on
fresh connections at once; the outcome is the first response's status
code, C{closed} (the connection closed with no response), C{hang} (nothing
within the timeout) or C{garbage}. The origins answer C{200 ok} to every
request head and record it.

An input differs when the two outcomes differ or when the origins saw a
different number of requests for it. Differences are grouped in classes
(Envoy's outcome, txenvoy's outcome, requests forwarded by each) and
each class is printed with its count, the mutations that produced it and
an example. A class where txenvoy forwarded more requests than Envoy is
marked LENIENT: the worst kind, a request that Envoy stops and txenvoy
lets through; each input that looks so is run again alone with longer
waits, and that run stands. The run is deterministic by seed (the inputs
are; timing decides only between a late answer and C{hang}), and bounded
in time: each input takes at most the timeout.
"""

import argparse
import collections
import os
import random
import re
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_small  # noqa: E402

TAG = b"@@"
_TAG_SEEN = re.compile(rb"zq(\d+)zq")

# -- the seed corpus: valid requests, each with TAG in its target ----------

SEEDS = [
    b"GET /@@/p?q=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t/1\r\nAccept: */*\r\n\r\n",
    b"GET /@@/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /@@/u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n"
    b"\r\nhello",
    b"POST /@@/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    b"PUT /@@/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;x=y\r\nhello\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"HEAD /@@/h HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"GET http://b.test/@@/abs HTTP/1.1\r\nHost: a\r\n\r\n",
    b"OPTIONS /@@/o HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
    b"DELETE /@@/d HTTP/1.1\r\nHost: a:8080\r\nAuthorization: Basic eDp5\r\n\r\n",
    b"GET /@@/a HTTP/1.1\r\nHost: a\r\n\r\nGET /@@/b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /@@/p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /@@/q HTTP/1.1\r\n"
    b"Host: a\r\n\r\n",
    b"GET /@@/k HTTP/1.1\r\nHost: a\r\nCookie: a=b; c=d\r\nAccept-Encoding: gzip, br\r\n"
    b"Accept-Language: en\r\nCache-Control: no-cache\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"GET /@@/close HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"POST /@@/e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    b"PATCH /@@/x HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}",
]

# -- mutations ---------------------------------------------------------------

SPECIAL = [b"\r", b"\n", b"\r\n", b"\t", b" ", b"\x00", b":", b",", b";", b"\x7f",
           b"\xff", b"\x0b", b"\x0c", b"\"", b"_", b"#", b"%", b"\\", b"\x01", b"\r\r\n",
           b"\n\r", b"\r\n ", b"\r\n\t", b"\x80", b"=", b"?", b"/", b"@"]

HEADERS = [
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip", b"Transfer-Encoding: x",
    b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: chunked, gzip",
    b"Transfer-Encoding: identity", b"Transfer-Encoding:", b"Transfer-Encoding: chunked ",
    b"Transfer-Encoding: \tchunked", b"Transfer-Encoding: Chunked", b"transfer-encoding: chunked",
    b"Transfer-Encoding : chunked", b"Transfer_Encoding: chunked",
    b"Content-Length: 0", b"Content-Length: 3", b"Content-Length: 5", b"Content-Length: 05",
    b"Content-Length: 5, 5", b"Content-Length: -1", b"Content-Length: +5",
    b"Content-Length: 99999999999999999999", b"Content-Length:", b"Content-Length: 0x5",
    b"Host: b", b"Host: a", b"Host:", b"Host: a b", b"Host: a:99999", b"Host: [::1]:80",
    b"Host: a@b", b"Host: a\x00b",
    b"Connection: close", b"Connection: keep-alive", b"Connection: upgrade",
    b"Connection: x-foo", b"Connection: close, x-foo", b"Connection: x-forwarded-for",
    b"Connection: a,b,c,d,e,f,g,h,i,j,k",
    b"Upgrade: websocket", b"Upgrade: h2c", b"Upgrade: foo",
    b"Expect: 100-continue", b"Expect: nonsense",
    b"X-Under_Score: 1", b"X-Empty:", b"X-Ctl: a\x01b", b"X-High: \xe9", b"X-Del: \x7f",
    b"X-Tab:\tvalue", b"X-Space:  value  ", b": novalue", b"NoColon", b"X-Long: " + b"a" * 5000,
    b"Keep-Alive: 5", b"TE: trailers", b"Proxy-Connection: keep-alive",
    b"X-Envoy-Original-Path: /x", b"Content-Type: text/plain",
    b"Trailer: X-T", b"Max-Forwards: 0", b"Via: 1.1 x", b"X-Request-Id: abc",
]

METHODS = [b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE", b"PATCH",
           b"CONNECT", b"M-SEARCH", b"NOTIFY", b"SUBSCRIBE", b"PURGE", b"PROPFIND", b"MKCOL",
           b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT", b"SEARCH", b"LINK", b"UNLINK",
           b"ACL", b"BIND", b"MERGE", b"QUERY", b"PRI", b"SOURCE", b"get", b"Get", b"FOO",
           b"G", b"GETT", b"", b"G\x00T", b"GE T", b"POST-", b"\xffGET", b"DESCRIBE",
           b"MKCALENDAR", b"CHECKOUT", b"PAUSE", b"RECORD", b"SETUP", b"FLUSH"]

VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.0",
            b"http/1.1", b"HTTP/1.1 ", b"HTTP/11", b"HTTP/1.10", b"HTTP/01.1", b"HTTP/1.",
            b"HTTP/1", b"HTTP/1.1\t", b"HTTP /1.1", b"HTTP/9.9", b"HTTPS/1.1", b"ICE/1.0",
            b"RTSP/1.0", b"HTTP/1.1x", b""]

SEPARATORS = [b"  ", b"\t", b"\x0b", b"\x0c", b"\r", b" \t", b"\x00", b"", b"   "]

TARGET_BITS = [b" ", b"#", b"%", b"%00", b"%zz", b"\x7f", b"\xff", b"?", b"*", b"..", b"\\",
               b"//", b"\t", b"\x00", b"\r", b"\n", b"{", b"|", b"^", b"`", b"\"", b"<",
               b"'", b"[", b"]", b"~", b";", b"@", b":", b"\x80", b"\x1f", b"!"]

CHUNK_LINES = [b"5;" + b"x" * 5000, b"5;ext", b"5 ;x=y", b"5; x = \"y\"", b"05", b"5 ", b" 5",
               b"0x5", b"-5", b"+5", b"5\t", b"fffffffffffffffff5", b"5;x=\x00", b"5;x=\x7f",
               b"5;x=\xff", b"", b"z", b"5;;", b"5;\t", b"5\x00", b"A", b"6", b"4",
               b"5;" + b"x" * 70000]


def _lines(data):
    """(start, end) of each line of the first head, without its line break."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = len(data)
    out = []
    pos = 0
    while pos < end:
        nl = data.find(b"\r\n", pos, end + 2)
        if nl < 0:
            nl = end
        out.append((pos, nl))
        pos = nl + 2
    return out


def mInsert(rng, data):
    i = rng.randrange(len(data) + 1)
    return data[:i] + rng.choice(SPECIAL) + data[i:]


def mDelete(rng, data):
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 4):]


def mReplace(rng, data):
    i = rng.randrange(len(data))
    return data[:i] + rng.choice(SPECIAL) + data[i + 1:]


def mLineEndings(rng, data):
    new = rng.choice([b"\n", b"\r\r\n", b"\r", b"\n\r", b"\r\n\r", b" \r\n", b"\t\r\n"])
    head, sep, rest = data.partition(b"\r\n\r\n")
    if rng.random() < 0.5:
        return head.replace(b"\r\n", new) + new + new + rest
    lines = _lines(data)
    start, end = lines[rng.randrange(len(lines))]
    return data[:end] + new + data[end + 2:]


def mDuplicateHeader(rng, data):
    lines = _lines(data)
    if len(lines) < 2:
        return data
    start, end = lines[rng.randrange(1, len(lines))]
    n = rng.choice([1, 1, 2, 5, 50, 99, 100, 101, 150])
    return data[:end + 2] + (data[start:end] + b"\r\n") * n + data[end + 2:]


def mAddHeader(rng, data):
    lines = _lines(data)
    start, end = lines[rng.randrange(len(lines))]
    return data[:end + 2] + rng.choice(HEADERS) + b"\r\n" + data[end + 2:]


def mMethod(rng, data):
    sp = data.find(b" ")
    return rng.choice(METHODS) + data[max(sp, 0):]


def mVersion(rng, data):
    line = data.find(b"\r\n")
    sp = data.rfind(b" ", 0, line)
    if line < 0 or sp < 0:
        return data
    return data[:sp + 1] + rng.choice(VERSIONS) + data[line:]


def mSeparator(rng, data):
    line = data.find(b"\r\n")
    spaces = [i for i in range(max(line, 0)) if data[i:i + 1] == b" "]
    if not spaces:
        return data
    i = rng.choice(spaces)
    return data[:i] + rng.choice(SEPARATORS) + data[i + 1:]


def mTarget(rng, data):
    first = data.find(b" ")
    second = data.find(b" ", first + 1)
    if first < 0 or second < 0:
        return data
    i = rng.randint(first + 1, second)
    return data[:i] + rng.choice(TARGET_BITS) + data[i:]


def mChunk(rng, data):
    head, sep, body = data.partition(b"\r\n\r\n")
    if b"chunked" not in head.lower() or not body:
        return mAddHeader(rng, data)
    lines = body.split(b"\r\n")
    i = rng.randrange(len(lines))
    lines[i] = rng.choice(CHUNK_LINES)
    return head + sep + b"\r\n".join(lines)


def mHeaderCase(rng, data):
    lines = _lines(data)
    if len(lines) < 2:
        return data
    start, end = lines[rng.randrange(1, len(lines))]
    line = data[start:end]
    colon = line.find(b":")
    if colon < 0:
        return data
    name = line[:colon]
    name = rng.choice([name.upper(), name.lower(), name.swapcase()])
    return data[:start] + name + line[colon:] + data[end:]


def mColon(rng, data):
    lines = _lines(data)
    if len(lines) < 2:
        return data
    start, end = lines[rng.randrange(1, len(lines))]
    colon = data.find(b":", start, end)
    if colon < 0:
        return data
    bit = rng.choice([b" ", b"\t", b"  ", b"\x00", b"\x0b"])
    if rng.random() < 0.5:
        return data[:colon] + bit + data[colon:]
    return data[:colon + 1] + bit + data[colon + 1:]


def mTruncate(rng, data):
    return data[:rng.randrange(1, len(data))]


def mFold(rng, data):
    lines = _lines(data)
    if len(lines) < 2:
        return data
    start, end = lines[rng.randrange(1, len(lines))]
    return data[:end] + rng.choice([b"\r\n folded", b"\r\n\tfolded", b"\r\n ", b"\n folded"]) + \
        data[end:]


MUTATIONS = [mInsert, mDelete, mReplace, mLineEndings, mDuplicateHeader, mAddHeader,
             mAddHeader, mMethod, mVersion, mSeparator, mTarget, mChunk, mChunk, mHeaderCase,
             mColon, mTruncate, mFold]


def makeInput(rng, index):
    """
    @return: C{(bytes, [mutation names])} for input C{index}; the tag
        C{zq<index>zq} is in the target and survives the mutations.
    """
    tag = b"zq%dzq" % (index,)
    while True:
        seed = rng.choice(SEEDS).replace(TAG, tag)
        data = seed
        names = []
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
            m = rng.choice(MUTATIONS)
            if len(data) > 1:
                data = m(rng, data) or data
            names.append(m.__name__[1:])
        if tag in data and data != seed:
            return data, names


# -- the origin ----------------------------------------------------------------


class _Reader:
    """Buffered reads from a socket; L{EOFError} at its end."""

    def __init__(self, conn):
        self.conn = conn
        self.buf = b""

    def _fill(self):
        piece = self.conn.recv(65536)
        if not piece:
            raise EOFError()
        self.buf += piece

    def until(self, marker):
        """The bytes before C{marker}; the marker is consumed."""
        while marker not in self.buf:
            self._fill()
        out, _, self.buf = self.buf.partition(marker)
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class Origin:
    """
    A threaded HTTP/1.1 origin that answers C{200 ok} to every request
    (after reading a body framed by Content-Length or chunked) and counts
    the requests received whole per input tag.
    """

    def __init__(self):
        self.seen = collections.Counter()
        self.heads = {}
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(30)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        reader = _Reader(conn)
        try:
            while True:
                head = reader.until(b"\r\n\r\n")
                lower = head.lower()
                m = re.search(rb"\r\ncontent-length: *(\d+)", lower)
                if b"\r\ntransfer-encoding:" in lower:
                    while True:
                        size = int(reader.until(b"\r\n").split(b";")[0], 16)
                        if size == 0:
                            break
                        reader.exactly(size + 2)
                    while reader.until(b"\r\n"):
                        pass
                elif m:
                    reader.exactly(int(m.group(1)))
                # Counted once whole: a head whose body the proxy gave up
                # on was not delivered.
                m = _TAG_SEEN.search(head.split(b"\r\n", 1)[0])
                if m is not None:
                    with self.lock:
                        self.seen[int(m.group(1))] += 1
                        self.heads.setdefault(int(m.group(1)), head)
                if head.startswith(b"HEAD "):
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except (OSError, EOFError, ValueError):
            pass
        finally:
            conn.close()

    def stop(self):
        self.running = False
        self.sock.close()


# -- the proxies -----------------------------------------------------------------

class Proxy:
    """
    Real Envoy or C{twistd -n envoy} on L{http_small.PROXY} (one route to
    one cluster), in front of its own L{Origin}.
    """

    def __init__(self, real):
        self.name = "envoy" if real else "txenvoy"
        self.origin = Origin()
        self.port = http_small.freePort()
        config = http_small.PROXY % {"port": self.port, "origin": self.origin.port}
        start = http_small.startEnvoy if real else http_small.startTxenvoy
        self.proc = start(config)
        try:
            http_small.waitPort(self.port, self.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        http_small.stop(self.proc)
        self.origin.stop()


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


def firstOutcomes(ports, data, timeout, settle=0.15):
    """
    Send C{data} on a fresh connection to each port at once, and read
    until each connection closed, or was quiet for C{settle} seconds after
    its first response (pipelined requests behind it get the time to reach
    the origin), or C{timeout} passed.

    @return: for each port, the first response's status (a string),
        C{"closed"}, C{"hang"} or C{"garbage"}.
    """
    socks = []
    for port in ports:
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    try:
        for s in socks:
            try:
                s.sendall(data)
            except OSError:
                pass
            s.setblocking(False)
        bufs = [b""] * len(socks)
        outcomes = [None] * len(socks)
        done = [False] * len(socks)
        last = [0.0] * len(socks)
        deadline = time.time() + timeout
        while not all(done):
            now = time.time()
            left = deadline - now
            if left <= 0:
                break
            for i, s in enumerate(socks):
                if not done[i] and outcomes[i] is not None and now - last[i] >= settle:
                    done[i] = True
            waiting = [s for s, d in zip(socks, done) if not d]
            if not waiting:
                break
            readable, _, _ = select.select(waiting, [], [], min(left, settle))
            now = time.time()
            for s in readable:
                i = socks.index(s)
                try:
                    piece = s.recv(65536)
                except OSError:
                    piece = b""
                if not piece:
                    if outcomes[i] is None:
                        outcomes[i] = _outcome(bufs[i], True)
                    done[i] = True
                    continue
                last[i] = now
                bufs[i] += piece
                if outcomes[i] is None:
                    outcomes[i] = _outcome(bufs[i], False)
        return [o if o is not None else ("hang" if not b else "garbage")
                for o, b in zip(outcomes, bufs)]
    finally:
        for s in socks:
            s.close()


def _outcome(buf, closed):
    if b"\r\n" in buf or (closed and buf):
        m = _STATUS.match(buf)
        return m.group(1).decode() if m else "garbage"
    if closed:
        return "closed"
    return None


# -- the run -----------------------------------------------------------------------


def run(count, seed, workers, timeout):
    """
    @return: C{(inputs, outcomes, envoyOrigin, txOrigin, seconds)}.
    """
    rng = random.Random(seed)
    inputs = [makeInput(rng, i) for i in range(count)]
    envoy = Proxy(True)
    try:
        tx = Proxy(False)
    except BaseException:
        envoy.stop()
        raise
    outcomes = [None] * count
    nextIndex = [0]
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                i = nextIndex[0]
                if i >= count:
                    return
                nextIndex[0] += 1
            try:
                outcomes[i] = firstOutcomes([envoy.port, tx.port], inputs[i][0], timeout)
            except OSError as e:
                outcomes[i] = ["error:%s" % (e.__class__.__name__,)] * 2
    started = time.time()
    try:
        threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Let requests in flight reach the origins.
        time.sleep(1.0)
        recheck(inputs, outcomes, envoy, tx)
        elapsed = time.time() - started
        if tx.proc.poll() is not None:
            print("txenvoy DIED with exit code %s" % (tx.proc.returncode,))
    finally:
        envoy.stop()
        tx.stop()
    return inputs, outcomes, envoy.origin, tx.origin, elapsed


def recheck(inputs, outcomes, envoy, tx, timeout=3.0, settle=1.0):
    """
    Run again, alone and with longer waits, each input that txenvoy's
    origin got more of than Envoy's (a slow pipelined request can miss the
    first run's window); the second run's outcome and counts stand.
    """
    for i in range(len(inputs)):
        if tx.origin.seen.get(i, 0) <= envoy.origin.seen.get(i, 0):
            continue
        before = envoy.origin.seen.get(i, 0), tx.origin.seen.get(i, 0)
        outcomes[i] = firstOutcomes([envoy.port, tx.port], inputs[i][0], timeout, settle)
        time.sleep(settle)
        envoy.origin.seen[i] -= before[0]
        tx.origin.seen[i] -= before[1]


def classify(inputs, outcomes, envoyOrigin, txOrigin):
    """
    @return: C{{classKey: [indexes]}} for the inputs that differ; a key is
        C{(envoyOutcome, txOutcome, envoyForwarded, txForwarded)}.
    """
    classes = collections.defaultdict(list)
    for i, (e, t) in enumerate(outcomes):
        fe = envoyOrigin.seen.get(i, 0)
        ft = txOrigin.seen.get(i, 0)
        if e != t or fe != ft:
            classes[(e, t, fe, ft)].append(i)
    return classes


def report(inputs, outcomes, envoyOrigin, txOrigin, elapsed, examples=1, out=sys.stdout):
    classes = classify(inputs, outcomes, envoyOrigin, txOrigin)
    count = len(inputs)
    differing = sum(len(v) for v in classes.values())
    lenient = sum(len(v) for (e, t, fe, ft), v in classes.items() if ft > fe)
    out.write("%d inputs in %.1fs; %d differ (%.2f%%); %d where txenvoy forwarded more "
              "than Envoy\n" % (count, elapsed, differing, 100.0 * differing / max(count, 1),
                                lenient))
    for key, indexes in sorted(classes.items(), key=lambda kv: -len(kv[1])):
        e, t, fe, ft = key
        flag = " LENIENT" if ft > fe else ""
        out.write("\n[%d] envoy %s / txenvoy %s; forwarded envoy %d, txenvoy %d%s\n" % (
            len(indexes), e, t, fe, ft, flag))
        byMutation = collections.Counter("+".join(inputs[i][1]) for i in indexes)
        out.write("    mutations: %s\n" % (", ".join(
            "%s %d" % kv for kv in byMutation.most_common(6)),))
        for i in indexes[:examples]:
            out.write("    #%d %r\n" % (i, _short(inputs[i][0])))
            if ft > fe:
                out.write("      txenvoy's origin got %r\n" % (_short(txOrigin.heads.get(i)),))
    return differing, lenient


def _short(data, limit=400):
    if data is None:
        return None
    if len(data) <= limit:
        return data
    return data[:limit] + b"...(%d bytes)" % (len(data),)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="seconds to wait for a first response")
    parser.add_argument("--examples", type=int, default=1)
    args = parser.parse_args(argv)
    inputs, outcomes, eo, to, elapsed = run(args.count, args.seed, args.workers, args.timeout)
    differing, lenient = report(inputs, outcomes, eo, to, elapsed, args.examples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
