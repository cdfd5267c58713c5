"""
Errors raised for a user's configuration mistakes.

A L{ConfigError} always carries the message printed to the user; the entry
point prints it on one line and exits 1. No traceback ever reaches the user
for a config mistake.
"""


#: What a user is told when neither C{-c} nor C{--config-yaml} is given.
NO_CONFIG = (
    "no config given: pass -c/--config-path FILE (an Envoy v3 bootstrap, YAML or "
    "JSON) or --config-yaml TEXT"
)


class ConfigError(Exception):
    """
    The configuration is invalid.

    @ivar message: the whole message, naming the field path where known.
    """

    def __init__(self, message):
        Exception.__init__(self, message)
        self.message = message

    def __str__(self):
        return self.message


class UnsupportedExtension(ConfigError):
    """
    A valid Envoy extension that txenvoy does not implement (yet).
    """

    def __init__(self, path, typeName, name=""):
        self.path = path
        self.typeName = typeName
        label = "'%s' " % (name,) if name else ""
        ConfigError.__init__(
            self,
            "%s: unsupported extension %s(@type type.googleapis.com/%s): "
            "txenvoy does not implement it yet" % (path, label, typeName),
        )


class UnsupportedField(ConfigError):
    """
    A valid Envoy field that txenvoy does not implement (yet); rejected
    rather than silently ignored.
    """

    def __init__(self, path, detail=""):
        ConfigError.__init__(
            self,
            "%s: unsupported field%s: txenvoy does not implement it yet"
            % (path, (" (%s)" % detail) if detail else ""),
        )
