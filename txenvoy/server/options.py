# -*- test-case-name: tests.server.test_options -*-
"""
Envoy's command line (C{OptionsImpl}), as a C{twisted.python.usage.Options}
for C{twistd envoy}, and the plain L{ServerOptions} value the server reads.
"""

import os
import sys

from twisted.python import usage

import txenvoy
from txenvoy.config.errors import NO_CONFIG

LOG_LEVELS = ("trace", "debug", "info", "warning", "warn", "error", "critical", "off")
MODES = ("serve", "validate", "init_only")

#: Envoy's application log layout, less the source location txenvoy does
#: not have (C{[%g:%#]}).
DEFAULT_LOG_FORMAT = "[%Y-%m-%d %T.%e][%t][%l][%n] %v"

#: How long SIGTERM (or a stop of an embedded server) lets open connections
#: finish: inside the 30 s an orchestrator such as Kubernetes waits between
#: SIGTERM and SIGKILL, so the process exits on its own first.
SHUTDOWN_DRAIN_TIME_S = 25


class ServerOptions:
    """
    The options a server runs with, whatever the entry point.
    """

    def __init__(self, configPath="", configYaml="", mode="serve", concurrency=1,
                 logLevel="info", componentLogLevel="", logPath="", drainTimeS=600,
                 parentShutdownTimeS=900, drainStrategy="gradual", serviceCluster="",
                 serviceNode="", serviceZone="", fileFlushIntervalMsec=10000,
                 shutdownDrainTimeS=SHUTDOWN_DRAIN_TIME_S, baseId=0, useDynamicBaseId=False,
                 logFormat=DEFAULT_LOG_FORMAT, logFormatEscaped=False, adminAddressPath="",
                 localAddressIpVersion="v4", allowUnknownStaticFields=False,
                 rejectUnknownDynamicFields=False, ignoreUnknownDynamicFields=False,
                 cpusetThreads=False, enableCoreDump=False, imports=(), freezeGarbage=True,
                 restartEpoch=0, baseIdPath="", disableHotRestart=False, hotRestart=False,
                 workerProcesses=1, workerIndexBase=0, membershipFromMain=False,
                 xdsMirror=None):
        self.configPath = configPath
        self.configYaml = configYaml
        self.mode = mode
        self.concurrency = concurrency
        self.logLevel = logLevel
        self.componentLogLevel = componentLogLevel
        self.logPath = logPath
        self.drainTimeS = drainTimeS
        self.parentShutdownTimeS = parentShutdownTimeS
        self.drainStrategy = drainStrategy
        self.serviceCluster = serviceCluster
        self.serviceNode = serviceNode
        self.serviceZone = serviceZone
        self.fileFlushIntervalMsec = fileFlushIntervalMsec
        self.shutdownDrainTimeS = shutdownDrainTimeS
        self.baseId = baseId
        self.useDynamicBaseId = useDynamicBaseId
        self.logFormat = logFormat
        self.logFormatEscaped = logFormatEscaped
        self.adminAddressPath = adminAddressPath
        self.localAddressIpVersion = localAddressIpVersion
        self.allowUnknownStaticFields = allowUnknownStaticFields
        self.rejectUnknownDynamicFields = rejectUnknownDynamicFields
        self.ignoreUnknownDynamicFields = ignoreUnknownDynamicFields
        self.cpusetThreads = cpusetThreads
        self.enableCoreDump = enableCoreDump
        self.imports = list(imports)
        self.freezeGarbage = freezeGarbage
        self.restartEpoch = restartEpoch
        #: C{--worker-processes}: above 1, connections are served by that
        #: many processes (L{txenvoy.server.worker_processes}).
        self.workerProcesses = workerProcesses
        #: The first worker thread number of this process (C{worker_N} stats).
        self.workerIndexBase = workerIndexBase
        #: A worker process: host sets and their health come from the main
        #: process (L{txenvoy.upstream.host_set_mirror}).
        self.membershipFromMain = membershipFromMain
        #: In a worker process, the L{txenvoy.xds.process_mirror.UpdateMirror}
        #: of the main process's dynamic resources.
        self.xdsMirror = xdsMirror
        self.baseIdPath = baseIdPath
        self.disableHotRestart = disableHotRestart
        #: Whether this process takes part in hot restart (see
        #: L{txenvoy.server.hot_restart}): the command line named an epoch
        #: or a base id, without C{--disable-hot-restart}.
        self.hotRestart = hotRestart and not disableHotRestart

    def asServerInfo(self):
        """C{command_line_options} of C{/server_info}, with Envoy's keys."""
        return {
            "base_id": str(self.baseId),
            "use_dynamic_base_id": self.useDynamicBaseId,
            "concurrency": self.concurrency,
            "config_path": self.configPath,
            "config_yaml": self.configYaml,
            "allow_unknown_static_fields": self.allowUnknownStaticFields,
            "reject_unknown_dynamic_fields": self.rejectUnknownDynamicFields,
            "ignore_unknown_dynamic_fields": self.ignoreUnknownDynamicFields,
            "admin_address_path": self.adminAddressPath,
            "local_address_ip_version": self.localAddressIpVersion,
            "log_level": self.logLevel,
            "component_log_level": self.componentLogLevel,
            "log_format": self.logFormat,
            "log_format_escaped": self.logFormatEscaped,
            "log_path": self.logPath,
            "service_cluster": self.serviceCluster,
            "service_node": self.serviceNode,
            "service_zone": self.serviceZone,
            "drain_strategy": "Gradual" if self.drainStrategy == "gradual" else "Immediate",
            "mode": {"serve": "Serve", "validate": "Validate", "init_only": "InitOnly"}[self.mode],
            "disable_hot_restart": not self.hotRestart,
            "enable_mutex_tracing": False,
            "restart_epoch": self.restartEpoch,
            "base_id_path": self.baseIdPath,
            "cpuset_threads": self.cpusetThreads,
            "disabled_extensions": [],
            "enable_fine_grain_logging": False,
            "socket_path": "",
            "socket_mode": 0,
            "enable_core_dump": self.enableCoreDump,
            "stats_tag": [],
            "file_flush_interval": "%gs" % (self.fileFlushIntervalMsec / 1000.0,),
            "drain_time": "%ds" % (self.drainTimeS,),
            "parent_shutdown_time": "%ds" % (self.parentShutdownTimeS,),
        }


def _nonNegativeInt(name):
    def parse(value):
        try:
            n = int(value)
        except ValueError:
            raise usage.UsageError("error: invalid %s '%s'" % (name, value))
        if n < 0:
            raise usage.UsageError("error: invalid %s '%s'" % (name, value))
        return n
    return parse


def _positiveInt(name):
    check = _nonNegativeInt(name)

    def parse(value):
        n = check(value)
        if n < 1:
            raise usage.UsageError("error: invalid %s '%s'" % (name, value))
        return n
    return parse


def _given(argv, flag):
    """Whether C{flag} is on the command line (as C{--flag V} or C{--flag=V})."""
    return any(a == flag or a.startswith(flag + "=") for a in argv)


class Options(usage.Options):
    """
    C{twistd envoy} options, with Envoy's names and messages.
    """

    # twistd prefixes "Usage: twistd [options] envoy".
    synopsis = "[options]"

    optParameters = [
        ["config-path", "c", "", "Path to configuration file (YAML or JSON)."],
        ["config-yaml", None, "", "YAML string for a bootstrap configuration, merged over the file."],
        ["mode", None, "serve", "One of 'serve' (default), 'validate' or 'init_only'."],
        ["concurrency", None, 1,
         "Number of worker threads to run; 0 runs connections on the main reactor.",
         _nonNegativeInt("concurrency")],
        ["worker-processes", None, 1,
         "txenvoy: number of worker processes, each running --concurrency worker threads "
         "with its own SO_REUSEPORT socket per listener; the main process keeps the admin, "
         "stats and config (default 1: workers are threads of the main process).",
         _positiveInt("worker-processes")],
        ["log-level", "l", "info", "Log level: trace, debug, info, warning, error, critical, off."],
        ["component-log-level", None, "", "Comma separated list of component:level pairs."],
        ["log-path", None, "", "Path to the application log file (default: stderr)."],
        ["drain-time-s", None, 600, "Hot restart and LDS removal drain time in seconds.",
         _nonNegativeInt("drain-time-s")],
        ["parent-shutdown-time-s", None, 900, "Hot restart parent shutdown time in seconds.",
         _nonNegativeInt("parent-shutdown-time-s")],
        ["drain-strategy", None, "gradual", "'gradual' (default) or 'immediate'."],
        ["service-cluster", None, "", "Cluster name (node.cluster when the bootstrap has none)."],
        ["service-node", None, "", "Node name (node.id when the bootstrap has none)."],
        ["service-zone", None, "", "Zone name."],
        ["file-flush-interval-msec", None, 10000, "Interval for log flushing in msec.",
         _nonNegativeInt("file-flush-interval-msec")],
        ["shutdown-drain-time-s", None, SHUTDOWN_DRAIN_TIME_S,
         "txenvoy: on SIGTERM, how long open connections may finish before exit "
         "(a second SIGTERM or SIGINT exits at once; SIGINT never waits).",
         _nonNegativeInt("shutdown-drain-time-s")],
        ["log-format", None, DEFAULT_LOG_FORMAT,
         "Log line format in spdlog syntax (%Y %m %d %T %e %H %M %S %t %l %L %n %v %%...)."],
        ["admin-address-path", None, "", "Write the admin address (ip:port) to this file."],
        ["local-address-ip-version", None, "v4", "The local IP address version (v4 or v6)."],
        ["restart-epoch", None, 0,
         "Hot restart epoch: 0 for the first process, then one more for each restart "
         "(hot-restarter.py passes $RESTART_EPOCH).", _nonNegativeInt("restart-epoch")],
        ["base-id", None, 0,
         "Hot restart base id: processes with different base ids never hand sockets over.",
         _nonNegativeInt("base-id")],
        ["base-id-path", None, "",
         "With --use-dynamic-base-id: write the base id chosen to this file."],
    ]

    optFlags = [
        ["disable-hot-restart", None,
         "Disable hot restart (txenvoy hot restarts only when --restart-epoch, --base-id or "
         "--use-dynamic-base-id is given)."],
        ["use-dynamic-base-id", None,
         "Pick a free hot restart base id from --base-id on (epoch 0 only; see --base-id-path)."],
        ["log-format-escaped", None, "Escape C-style escape sequences in the application logs."],
        ["allow-unknown-static-fields", None,
         "Unknown fields in the static config are warnings (server.static_unknown_fields)."],
        ["reject-unknown-dynamic-fields", None,
         "Accepted: txenvoy reads no dynamic (xDS) config yet."],
        ["ignore-unknown-dynamic-fields", None,
         "Accepted: txenvoy reads no dynamic (xDS) config yet."],
        ["cpuset-threads", None,
         "Default --concurrency from the number of CPUs this process may run on."],
        ["enable-core-dump", None, "Enable core dumps (raise RLIMIT_CORE to its hard limit)."],
    ]

    def __init__(self):
        usage.Options.__init__(self)
        self["import"] = []

    def opt_import(self, module):
        """
        Import a Python module before the config is read, so filters it
        registers with @extension can be named in it (repeatable).
        """
        self["import"].append(module)

    def parseOptions(self, options=None):
        # Envoy prints usage errors to stderr (twistd prints them to stdout).
        argv = sys.argv[1:] if options is None else options
        self._concurrencyGiven = _given(argv, "--concurrency")
        self._hotRestartGiven = any(_given(argv, flag) for flag in (
            "--restart-epoch", "--base-id", "--use-dynamic-base-id"))
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            message = str(e)
            if not message.startswith("error:"):
                message = "error: " + message
            sys.stderr.write("%s (see: %s --help)\n" % (message, self.commandName))
            sys.stderr.flush()
            sys.exit(1)

    #: How the user started us, for messages.
    commandName = "twistd envoy"

    def opt_version(self):
        """Print the version and exit."""
        sys.stdout.write("\n%s  version: %s\n\n" % ("envoy", txenvoy.VERSION_STRING))
        sys.stdout.flush()
        sys.exit(0)

    def postOptions(self):
        if self["mode"] not in MODES:
            raise usage.UsageError("error: unknown mode '%s'" % (self["mode"],))
        if self["log-level"] not in LOG_LEVELS:
            raise usage.UsageError("error: invalid log level specified '%s'" % (self["log-level"],))
        if self["drain-strategy"] not in ("gradual", "immediate"):
            raise usage.UsageError("error: unknown drain-strategy '%s'" % (self["drain-strategy"],))
        if self["local-address-ip-version"] not in ("v4", "v6"):
            raise usage.UsageError("error: unknown IP address version '%s'"
                                   % (self["local-address-ip-version"],))
        if self["use-dynamic-base-id"] and self["restart-epoch"] > 0:
            raise usage.UsageError("error: cannot use --restart-epoch=%d with "
                                   "--use-dynamic-base-id" % (self["restart-epoch"],))
        if self["cpuset-threads"] and not self._concurrencyGiven:
            self["concurrency"] = len(os.sched_getaffinity(0))
        parent = getattr(self, "parent", None)
        if parent is not None:
            from txenvoy.server.tap import removeStalePidfile

            removeStalePidfile(parent.get("pidfile"))
        if not self["config-path"] and not self["config-yaml"]:
            # One line in the user's terms, not the usage block twistd
            # prints around a UsageError.
            sys.stderr.write("%s: %s (see: %s --help)\n" % (self.commandName, NO_CONFIG,
                                                             self.commandName))
            sys.stderr.flush()
            sys.exit(1)

    def serverOptions(self):
        """The parsed values as L{ServerOptions}."""
        return ServerOptions(
            configPath=self["config-path"], configYaml=self["config-yaml"], mode=self["mode"],
            concurrency=self["concurrency"], logLevel=self["log-level"],
            componentLogLevel=self["component-log-level"], logPath=self["log-path"],
            drainTimeS=self["drain-time-s"], parentShutdownTimeS=self["parent-shutdown-time-s"],
            drainStrategy=self["drain-strategy"], serviceCluster=self["service-cluster"],
            serviceNode=self["service-node"], serviceZone=self["service-zone"],
            fileFlushIntervalMsec=self["file-flush-interval-msec"],
            shutdownDrainTimeS=self["shutdown-drain-time-s"], baseId=self["base-id"],
            useDynamicBaseId=bool(self["use-dynamic-base-id"]), logFormat=self["log-format"],
            logFormatEscaped=bool(self["log-format-escaped"]),
            adminAddressPath=self["admin-address-path"],
            localAddressIpVersion=self["local-address-ip-version"],
            allowUnknownStaticFields=bool(self["allow-unknown-static-fields"]),
            rejectUnknownDynamicFields=bool(self["reject-unknown-dynamic-fields"]),
            ignoreUnknownDynamicFields=bool(self["ignore-unknown-dynamic-fields"]),
            cpusetThreads=bool(self["cpuset-threads"]),
            enableCoreDump=bool(self["enable-core-dump"]), imports=self["import"],
            restartEpoch=self["restart-epoch"], baseIdPath=self["base-id-path"],
            disableHotRestart=bool(self["disable-hot-restart"]),
            hotRestart=getattr(self, "_hotRestartGiven", False),
            workerProcesses=self["worker-processes"])
