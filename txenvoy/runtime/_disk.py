# -*- test-case-name: tests.runtime.test_runtime -*-
"""
The file system side of a runtime disk layer: Envoy's C{DiskLayer}
directory walk, the check its file watcher makes on C{symlink_root}, and
the identity of that root that a poller compares to notice a swap.
"""

import errno
import os
import stat

#: Envoy's C{DiskLayer} gives up below this many directory levels.
MAX_WALK_DEPTH = 16

# Envoy's Filesystem::illegalPath: no runtime values from these.
_ILLEGAL_PREFIXES = ("/dev", "/sys", "/proc")


class DiskLayerError(Exception):
    """A disk layer could not be read; the layer is left out of the snapshot."""


def checkWatchable(symlinkRoot):
    """
    The check Envoy's file watcher makes when a disk layer is configured: it
    watches the directory that holds C{symlink_root}, so that directory must
    exist; the root itself may appear later.

    @return: C{None}, or Envoy's message for the failure.
    """
    if "/" not in symlinkRoot:
        return "invalid file path %s" % (symlinkRoot,)
    directory = symlinkRoot.rsplit("/", 1)[0] or "/"
    if not os.path.exists(directory):
        return "unable to add filesystem watch for file %s: %s" % (
            symlinkRoot, os.strerror(errno.ENOENT))
    return None


def rootIdentity(symlinkRoot):
    """
    What changes when C{symlink_root} is replaced by a rename (Envoy reloads
    on the watcher's C{MovedTo}): the inode of the path itself, not of its
    target, and the link's target. Editing a file in place changes neither,
    as it does not trigger Envoy either.

    @return: a hashable value, or C{None} when the path does not exist.
    """
    try:
        st = os.lstat(symlinkRoot)
    except OSError:
        return None
    target = None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(symlinkRoot)
        except OSError:
            pass
    return (st.st_dev, st.st_ino, target)


def isDirectory(path):
    """Whether C{path} is a directory (following links), as Envoy checks."""
    return os.path.isdir(path)


def _illegalPath(path):
    if path.startswith("/dev/fd/"):
        return False
    try:
        canonical = os.path.realpath(path, strict=True)
    except (OSError, ValueError):
        return True
    return any(canonical == p or canonical.startswith(p + "/") for p in _ILLEGAL_PREFIXES)


def fileValue(text):
    """
    A runtime file's value as Envoy's C{DiskLayer} reads it: non-empty
    lines, without those starting with C{#}; the last line is
    right-trimmed and has no newline (so is any line equal to it: Envoy
    compares line text, not position).
    """
    lines = [line for line in text.split("\n") if line]
    if not lines:
        return ""
    last = lines[-1]
    out = []
    for line in lines:
        if line.startswith("#"):
            continue
        if line == last:
            out.append(line.rstrip(" \t\n\v\f\r"))
        else:
            out.append(line + "\n")
    return "".join(out)


def walk(path):
    """
    Read every regular file under C{path} (links followed) into
    C{{"a.b.c": value}} for the file C{path/a/b/c}.

    @raise DiskLayerError: with Envoy's reason, for a path under /dev,
        /sys or /proc, a tree deeper than L{MAX_WALK_DEPTH} or a file that
        cannot be read.
    """
    values = {}
    _walk(path, "", 1, values)
    return values


def _walk(path, prefix, depth, values):
    if depth > MAX_WALK_DEPTH:
        raise DiskLayerError("Walk recursion depth exceeded %d" % (MAX_WALK_DEPTH,))
    if _illegalPath(path):
        raise DiskLayerError("Invalid path: %s" % (path,))
    try:
        names = os.listdir(path)
    except OSError as e:
        raise DiskLayerError("unable to open directory %s: %s" % (path, e.strerror))
    for name in names:
        fullPath = path + "/" + name
        key = name if not prefix else prefix + "." + name
        try:
            st = os.stat(fullPath)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else (
                "file" if stat.S_ISREG(st.st_mode) else "other")
        except FileNotFoundError:
            # A dangling link: Envoy takes it for a regular file, and
            # then fails to read it.
            kind = "file"
        except OSError as e:
            raise DiskLayerError("unable to stat %s: %s" % (fullPath, e.strerror))
        if kind == "dir":
            _walk(fullPath, key, depth + 1, values)
        elif kind == "file":
            try:
                with open(fullPath, "rb") as f:
                    text = f.read().decode("utf-8", "surrogateescape")
            except OSError as e:
                raise DiskLayerError("unable to read file %s: %s" % (fullPath, e.strerror))
            values[key] = fileValue(text)
