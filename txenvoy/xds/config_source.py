# -*- test-case-name: tests.xds.test_file_xds -*-
"""
Which C{ConfigSource}s txenvoy can subscribe to: files
(C{path_config_source} and the older C{path}). Every other source (a
control plane over gRPC or REST, ADS) is refused with its field path.
"""

import os

from txenvoy.config.errors import ConfigError, UnsupportedField, report
from txenvoy.config.fields import checkFields

#: The C{dynamic_resources} fields that are honoured.
DYNAMIC_FIELDS = ("lds_config", "cds_config")


class FileSource:
    """
    Where a file subscription reads: C{path}, re-read when a file is moved
    into C{watchedDirectory} (or, without one, onto C{path}).
    """

    def __init__(self, path, watchedDirectory=None):
        self.path = path
        self.watchedDirectory = watchedDirectory

    def __repr__(self):
        return "<FileSource %s watching %s>" % (self.path, self.watchedDirectory)


def fileSourceOf(source, path):
    """
    The L{FileSource} of a C{ConfigSource}, or C{None} (reported) when it
    is not a file.

    @param path: the source's field path, e.g. C{dynamic_resources.lds_config}.
    """
    kind = source.WhichOneof("config_source_specifier")
    checkFields(source, ("path", "path_config_source", "resource_api_version",
                         "initial_fetch_timeout"), path)
    if kind == "path":
        return FileSource(source.path)
    if kind == "path_config_source":
        pcs = source.path_config_source
        checkFields(pcs, ("path", "watched_directory"), path + ".path_config_source")
        watched = None
        if pcs.HasField("watched_directory"):
            watched = pcs.watched_directory.path
        return FileSource(pcs.path, watched)
    if kind is None:
        report(ConfigError("%s: a config source needs one of path_config_source, "
                           "api_config_source or ads" % (path,)))
        return None
    report(UnsupportedField("%s.%s" % (path, kind),
                            "only path_config_source and path are implemented"))
    return None


def checkExists(fileSource):
    """
    Raise L{ConfigError} as Envoy's serve mode does when the file (or the
    watched directory) is not there when the subscription starts.
    """
    for p in (fileSource.path, fileSource.watchedDirectory):
        if p is not None and not os.path.exists(p):
            raise ConfigError("paths must refer to an existing path in the system: "
                              "'%s' does not exist" % (p,))
