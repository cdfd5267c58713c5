"""
The admin pages a person looks at, in a real headless Chromium: starts a
real C{twistd envoy} (and, with C{--envoy}, real Envoy beside it) with a
proxy in front of a small origin, sends requests so that counters move
and histograms fill, then loads C{/} and C{/stats?format=active-html}
in Chromium and saves a screenshot of each. Not a test: Chromium comes
from the system's packages (C{apt-get install chromium}).

    python bench/admin_screenshot.py [--out /tmp/admin-shots] [--envoy]
                                     [--chromium /usr/bin/chromium]

Prints the screenshot paths; exits 2 when no Chromium is found.
"""

import argparse
import http.server
import os
import shutil
import subprocess
import sys
import threading
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import http_small  # noqa: E402

CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class _Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def findChromium(given):
    for name in ((given,) if given else CHROMIUMS):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(chromium, url, path):
    """Load C{url} headless, let its script poll a few times, save a PNG."""
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", "--window-size=1280,1800",
                    "--virtual-time-budget=6000", "--screenshot=" + path, url],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/admin-shots")
    parser.add_argument("--chromium", default=None)
    parser.add_argument("--envoy", action="store_true", help="real Envoy's pages too")
    parser.add_argument("--requests", type=int, default=200)
    options = parser.parse_args()
    chromium = findChromium(options.chromium)
    if chromium is None:
        print("no Chromium found (tried %s): apt-get install chromium" % (", ".join(
            (options.chromium,) if options.chromium else CHROMIUMS),), file=sys.stderr)
        return 2
    os.makedirs(options.out, exist_ok=True)
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    proxies = [("txenvoy", http_small.startTxenvoy)]
    if options.envoy:
        proxies.append(("envoy", http_small.startEnvoy))
    try:
        for name, start in proxies:
            port, admin = http_small.freePort(), http_small.freePort()
            config = (http_small.PROXY % {"port": port, "origin": origin.server_address[1]}
                      + "stats_flush_interval: 1s\n"
                      "admin:\n  address: {socket_address: {address: 127.0.0.1, "
                      "port_value: %d}}\n" % (admin,))
            proc = start(config)
            try:
                http_small.waitPort(port, proc)
                http_small.waitPort(admin, proc)
                for i in range(options.requests):
                    with urllib.request.urlopen("http://127.0.0.1:%d/r%d" % (port, i),
                                                timeout=10) as r:
                        r.read()
                base = "http://127.0.0.1:%d" % (admin,)
                for page, url in (("home", base + "/"),
                                  ("active", base + "/stats?format=active-html")):
                    path = os.path.join(options.out, "%s-%s.png" % (name, page))
                    print(screenshot(chromium, url, path))
            finally:
                http_small.stop(proc)
    finally:
        origin.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
