# -*- test-case-name: tests.server.test_options -*-
"""
Envoy's command line (C{OptionsImpl}), as a C{twisted.python.usage.Options}
for C{twistd envoy}, and the plain L{ServerOptions} value the server reads.
"""

import sys

from twisted.python import usage

import txenvoy
from txenvoy.config.errors import NO_CONFIG

LOG_LEVELS = ("trace", "debug", "info", "warning", "warn", "error", "critical", "off")
MODES = ("serve", "validate", "init_only")


class ServerOptions:
    """
    The options a server runs with, whatever the entry point.
    """

    def __init__(self, configPath="", configYaml="", mode="serve", concurrency=1,
                 logLevel="info", componentLogLevel="", logPath="", drainTimeS=600,
                 parentShutdownTimeS=900, drainStrategy="gradual", serviceCluster="",
                 serviceNode="", serviceZone="", fileFlushIntervalMsec=10000):
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

    def asServerInfo(self):
        """C{command_line_options} of C{/server_info}, with Envoy's keys."""
        return {
            "base_id": "0",
            "use_dynamic_base_id": False,
            "concurrency": self.concurrency,
            "config_path": self.configPath,
            "config_yaml": self.configYaml,
            "allow_unknown_static_fields": False,
            "reject_unknown_dynamic_fields": False,
            "ignore_unknown_dynamic_fields": False,
            "admin_address_path": "",
            "local_address_ip_version": "v4",
            "log_level": self.logLevel,
            "component_log_level": self.componentLogLevel,
            "log_format": "[%Y-%m-%d %T.%e][%t][%l][%n] %v",
            "log_format_escaped": False,
            "log_path": self.logPath,
            "service_cluster": self.serviceCluster,
            "service_node": self.serviceNode,
            "service_zone": self.serviceZone,
            "drain_strategy": "Gradual" if self.drainStrategy == "gradual" else "Immediate",
            "mode": {"serve": "Serve", "validate": "Validate", "init_only": "InitOnly"}[self.mode],
            "disable_hot_restart": True,
            "enable_mutex_tracing": False,
            "restart_epoch": 0,
            "cpuset_threads": False,
            "disabled_extensions": [],
            "enable_fine_grain_logging": False,
            "socket_path": "",
            "socket_mode": 0,
            "enable_core_dump": False,
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
    ]

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
        if not self["config-path"] and not self["config-yaml"]:
            # One line in the user's terms, not the usage block twistd
            # prints around a UsageError.
            sys.stderr.write("twistd envoy: %s (see: twistd envoy --help)\n" % (NO_CONFIG,))
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
            fileFlushIntervalMsec=self["file-flush-interval-msec"])
