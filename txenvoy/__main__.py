"""C{python -m txenvoy -c envoy.yaml}: the C{txenvoy} command."""

from txenvoy.server.script import run

if __name__ == "__main__":
    run()
