"""
Built-in extensions. Importing this package registers every one of them,
by its C{typed_config} C{@type}, in L{txenvoy.config.registry}; the core
never imports an extension by name.

Every module below this package is imported, so a new extension needs only
its own file.
"""

import importlib
import pkgutil


def _importAll():
    for info in pkgutil.walk_packages(__path__, __name__ + "."):
        importlib.import_module(info.name)


_importAll()
