"""
Sphinx directives that write pages from txenvoy itself, so the docs say
what the code does:

 - C{txenvoy-usage}: C{txenvoy --help}, from the options class;
 - C{txenvoy-extensions}: a table of every registered extension, by
   category, with its Envoy name(s) and C{@type}.
"""

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

        registry.loadPlugins()
        out = []
        byCategory = {}
        for category, typeName in registry.registered():
            byCategory.setdefault(category, []).append(typeName)
        for category in sorted(byCategory):
            section = nodes.section(ids=["category-" + nodes.make_id(category)])
            section += nodes.title(text=category)
            table = nodes.table()
            group = nodes.tgroup(cols=2)
            table += group
            group += nodes.colspec(colwidth=1)
            group += nodes.colspec(colwidth=2)
            head = nodes.thead()
            head += _row("name", "@type")
            group += head
            body = nodes.tbody()
            for typeName in byCategory[category]:
                factory = registry.lookup(category, typeName)
                names = ", ".join(getattr(factory, "names", ()) or ()) or "-"
                body += _row(names, typeName)
            group += body
            section += table
            out.append(section)
        return out


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
