#!/usr/bin/env python3
"""
A process watcher that behaves as Envoy's C{restarter/hot-restarter.py}:
the hot restart e2e tests drive txenvoy with it, as users drive Envoy.

Usage: C{hot_restarter.py START_SCRIPT}. It runs START_SCRIPT with
C{RESTART_EPOCH=0} in its environment; each SIGHUP runs it again with the
next epoch (the script passes C{--restart-epoch $RESTART_EPOCH}); SIGTERM or
SIGINT sends SIGTERM to every child, waits up to 30 s for them, kills those
left and exits; SIGUSR1 is passed to every child. A child that exits 0 is
forgotten; one that exits otherwise or is killed by a signal makes it kill
every child and exit 1. It exits when it has no child left.

Compared line by line with Envoy's script (envoyproxy/envoy
C{restarter/hot-restarter.py}, commit 0d2acde2e8d7): the same signals,
environment, exec of the start script, waits and exit codes, and the same
log messages the tests read. Envoy's own script, run in place of this one,
drives C{test_hot_restart.HotRestartTests.test_twoRestartsUnderLoad}
unchanged.
"""

import logging
import os
import signal
import sys
import time

#: Seconds the children get to exit after SIGTERM before SIGKILL.
TERM_WAIT_SECONDS = 30

logger = logging.getLogger("hot-restarter")
children = []
nextEpoch = [0]


def forceKillAll():
    for pid in children:
        logger.warning("force killing PID=%d", pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            logger.error("error force killing PID=%d continuing", pid)
    del children[:]


def termAll():
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for pid in children:
        logger.info("sending TERM to PID=%d", pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            logger.error("error sending TERM to PID=%d continuing", pid)
    for _ in range(TERM_WAIT_SECONDS):
        for pid in list(children):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                children.remove(pid)
        if not children:
            logger.info("all children exited cleanly")
            return
        time.sleep(1)
    for pid in children:
        logger.info("child PID=%d did not exit cleanly, killing", pid)
    forceKillAll()
    sys.exit(1)


def onTerm(signum, frame):
    logger.warning("got %s", "SIGTERM" if signum == signal.SIGTERM else "SIGINT")
    termAll()
    sys.exit(0)


def onHangUp(signum, frame):
    logger.info("got SIGHUP")
    forkAndExec()


def onUserOne(signum, frame):
    for pid in children:
        logger.info("sending SIGUSR1 to PID=%d", pid)
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            logger.error("error in SIGUSR1 to PID=%d continuing", pid)


def onChild(signum, frame):
    logger.info("got SIGCHLD")
    killAll = False
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            continue
        children.remove(pid)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            logger.info("PID=%d exited with code=0", pid)
        elif os.WIFEXITED(status):
            logger.warning("PID=%d exited with code=%d", pid, os.WEXITSTATUS(status))
            killAll = True
        elif os.WIFSIGNALED(status):
            logger.warning("PID=%d was killed with signal=%d", pid, os.WTERMSIG(status))
            killAll = True
        else:
            killAll = True
    if killAll:
        logger.warning("Due to abnormal exit, force killing all child processes and exiting")
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        forceKillAll()
    if not children:
        logger.warning("exiting due to lack of child processes")
        sys.exit(1 if killAll else 0)


def forkAndExec():
    os.environ["RESTART_EPOCH"] = str(nextEpoch[0])
    logger.info("forking and execing new child process at epoch %d", nextEpoch[0])
    nextEpoch[0] += 1
    pid = os.fork()
    if pid == 0:
        os.execl(sys.argv[1], sys.argv[1])
    logger.info("forked new child process with PID=%d", pid)
    children.append(pid)


def main():
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(
        "[%(asctime)s.%(msecs)03d][%(process)d][%(levelname)s][core] %(message)s",
        "%Y-%m-%d %H:%M:%S"))
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.info("starting hot-restarter with target: %s", sys.argv[1])
    signal.signal(signal.SIGTERM, onTerm)
    signal.signal(signal.SIGINT, onTerm)
    signal.signal(signal.SIGHUP, onHangUp)
    signal.signal(signal.SIGCHLD, onChild)
    signal.signal(signal.SIGUSR1, onUserOne)
    forkAndExec()
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
