"""
Sphinx directives that write pages from txenvoy itself, so the docs say
what the code does:

 - C{txenvoy-usage}: C{txenvoy --help}, from the options class;
 - C{txenvoy-extensions}: a table of every registered extension, by
   category, with its Envoy name(s), C{@type}, the fields of its config
   that txenvoy reads and those it refuses with their path. The fields are
   those the builders declare while every example config, and one config
   with what the examples lack, is built in validate mode.
"""

import glob
import os

from docutils import nodes
from docutils.parsers.rst import Directive


class UsageDirective(Directive):
    """The command line's usage text, as C{txenvoy --help} prints it."""

    def run(self):
        from txenvoy.server.script import ScriptOptions

        options = ScriptOptions()
        # Not the docs builder's own docstring, which usage.Options would add.
        options.longdesc = ""
        text = str(options).strip()
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


class ExtensionsDirective(Directive):
    """One table per extension category, from the registry."""

    def run(self):
        from txenvoy.config import registry
        from txenvoy.config.fields import declaredFields, refusedFields

        registry.loadPlugins()
        _buildEveryExtension()
        out = []
        byCategory = {}
        for category, typeName in registry.registered():
            byCategory.setdefault(category, []).append(typeName)
        for category in sorted(byCategory):
            section = nodes.section(ids=["category-" + nodes.make_id(category)])
            section += nodes.title(text=category)
            table = nodes.table()
            group = nodes.tgroup(cols=4)
            table += group
            group += nodes.colspec(colwidth=2)
            group += nodes.colspec(colwidth=3)
            group += nodes.colspec(colwidth=3)
            group += nodes.colspec(colwidth=3)
            head = nodes.thead()
            head += _row("name", "@type", "fields read", "fields refused")
            group += head
            body = nodes.tbody()
            for typeName in byCategory[category]:
                factory = registry.lookup(category, typeName)
                names = ", ".join(getattr(factory, "names", ()) or ()) or "-"
                fields = declaredFields(typeName)
                refused = refusedFields(typeName)
                body += _row(names, typeName,
                             ", ".join(fields) if fields is not None else "not declared",
                             ", ".join(refused) if refused else
                             ("-" if refused is not None else "not declared"))
            group += body
            section += table
            out.append(section)
        return out


def _buildEveryExtension():
    """Build every example config and the rest-of-the-extensions one."""
    from twisted.internet.task import Clock

    from tests.test_interfaces import EVERY_OTHER_EXTENSION
    from tests.e2e.harness import EXAMPLES
    from txenvoy.config.errors import ConfigError
    from txenvoy.config.loader import loadBootstrap
    from txenvoy.server.server import Server

    cwd = os.getcwd()
    os.chdir(EXAMPLES)
    try:
        for path in sorted(glob.glob("*.yaml")):
            try:
                Server(Clock(), loadBootstrap(path), validateOnly=True)
            except ConfigError:
                pass
    finally:
        os.chdir(cwd)
    Server(Clock(), loadBootstrap(None, EVERY_OTHER_EXTENSION), validateOnly=True)


def _row(*cells):
    row = nodes.row()
    for text in cells:
        entry = nodes.entry()
        entry += nodes.paragraph(text=text)
        row += entry
    return row


def setup(app):
    app.add_directive("txenvoy-usage", UsageDirective)
    app.add_directive("txenvoy-extensions", ExtensionsDirective)
    return {"parallel_read_safe": True}
