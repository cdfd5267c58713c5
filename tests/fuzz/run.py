"""
Run one fuzz target under atheris (coverage-guided, libFuzzer's engine)::

    python -m tests.fuzz.run TARGET [libFuzzer flags] [corpus dirs]
    python -m tests.fuzz.run http_server -runs=1000000

Every module of C{txenvoy} is imported instrumented, so coverage guides the
search through txenvoy's own code. Flags such as C{-runs=N},
C{-max_total_time=S}, C{-seed=N}, C{-jobs=N} and C{-artifact_prefix=DIR/}
go to libFuzzer as they are; C{--instrument=target} instruments only the
modules the target's module imports, which starts faster. Without a corpus directory the run starts
from the seeds in C{tests/fuzz/corpus/TARGET/} and keeps what it finds in
C{$TMPDIR/txenvoy-fuzz/TARGET/}, so the seeds in the tree are never
written to; crash inputs land in C{$TMPDIR/txenvoy-fuzz/TARGET-crashes/}
unless C{-artifact_prefix} says otherwise.

A crash input replays alone with the same command and the file's path as
the only corpus argument (libFuzzer runs each file given once).
"""

import importlib
import os
import pkgutil
import sys
import tempfile

from tests.fuzz import TARGETS

HERE = os.path.dirname(os.path.abspath(__file__))


def seedDirectory(target):
    """The seed corpus of C{target} in the tree."""
    return os.path.join(HERE, "corpus", target)


def workDirectory(target):
    """Where a run keeps the inputs it finds for C{target}."""
    return os.path.join(tempfile.gettempdir(), "txenvoy-fuzz", target)


def importInstrumented(atheris, target, everything=True):
    """
    Import C{target}'s module with atheris' coverage instrumentation of
    txenvoy's code, and return it.

    @param everything: instrument every txenvoy module (as long runs do, so
        that modules the target imports late are covered too), not just
        those the target's module imports (quicker to start).
    """
    with atheris.instrument_imports(include=["txenvoy"]):
        if everything:
            import txenvoy

            for info in pkgutil.walk_packages(txenvoy.__path__, "txenvoy."):
                importlib.import_module(info.name)
        return importlib.import_module("tests.fuzz." + target)


def libFuzzerArguments(target, args):
    """
    libFuzzer's argv for C{target}: C{args} as given, plus the working and
    seed corpus directories and the artifact prefix when C{args} has none.
    """
    flags = [a for a in args if a.startswith("-")]
    paths = [a for a in args if not a.startswith("-")]
    if not paths:
        work = workDirectory(target)
        os.makedirs(work, exist_ok=True)
        paths = [work, seedDirectory(target)]
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        crashes = workDirectory(target) + "-crashes"
        os.makedirs(crashes, exist_ok=True)
        flags.append("-artifact_prefix=" + crashes + os.sep)
    return flags + paths


def main(argv):
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.stderr.write("usage: python -m tests.fuzz.run TARGET [libFuzzer flags] [dirs]\n"
                         "targets: %s\n" % (" ".join(TARGETS),))
        return 2
    import atheris

    target = argv[1]
    rest = argv[2:]
    everything = "--instrument=target" not in rest
    rest = [a for a in rest if a != "--instrument=target"]
    module = importInstrumented(atheris, target, everything)
    args = [argv[0]] + libFuzzerArguments(target, rest)
    sys.stderr.write("fuzzing %s: %s\n" % (target, " ".join(args[1:])))
    atheris.Setup(args, module.testOneInput)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
