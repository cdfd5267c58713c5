"""
The reference point for small HTTP requests in Python: Twisted's own
C{twisted.web.proxy.ReverseProxyResource} in front of the origin.

    python bench/twisted_web_proxy.py LISTEN_PORT ADMIN_PORT ORIGIN_PORT

The admin port answers C{/ready} with C{LIVE}, so the suite drives it like
the other proxies.
"""

import sys

from twisted.internet import reactor
from twisted.web import proxy, resource, server


class Ready(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"LIVE\n"


def main():
    listen, admin, origin = (int(a) for a in sys.argv[1:4])
    site = server.Site(proxy.ReverseProxyResource("127.0.0.1", origin, b"", reactor=reactor))
    site.noisy = False
    reactor.listenTCP(listen, site, interface="127.0.0.1")
    reactor.listenTCP(admin, server.Site(Ready()), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
