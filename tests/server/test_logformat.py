"""Tests for L{txenvoy.server.logformat}: Envoy's --log-format flags."""

import time

from twisted.trial.unittest import SynchronousTestCase

from txenvoy.server.logformat import cEscape, compileLogFormat

T = time.mktime((2026, 12, 7, 9, 14, 45, 0, 0, -1)) + 0.920


class LogFormatTests(SynchronousTestCase):

    def render(self, pattern, message="hello", location=None, escaped=False):
        return compileLogFormat(pattern, escaped)(T, 4242, "warning", "upstream", message,
                                                  location)

    def test_envoyDefault(self):
        """Envoy's default layout, as Envoy 1.40 prints it."""
        self.assertEqual(
            self.render("[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v",
                        location="txenvoy/http/router.py:624"),
            "[2026-12-07 09:14:45.920][4242][warning][upstream] "
            "[txenvoy/http/router.py:624] hello\n")

    def test_flags(self):
        """Observed in Envoy 1.40: %L is the level's letter, %s the file name, %% a percent."""
        self.assertEqual(self.render("%H:%M:%S|%D|%L|%s|%#|%%|%^x%$",
                                     location="txenvoy/server/server.py:12"),
                         "09:14:45|12/07/26|W|server.py|12|%|x\n")

    def test_unknownFlagPrintedAsWritten(self):
        """Envoy 1.40 prints C{%q} as is."""
        self.assertEqual(self.render("%q %v"), "%q hello\n")

    def test_escaped(self):
        """--log-format-escaped: one line per event, C escapes escaped."""
        self.assertEqual(self.render("%v", "a\nb\t'c'", escaped=True), "a\\nb\\t\\'c\\'\n")
        self.assertEqual(self.render("%_|%j", 'x\n"'), 'x\\n\\"|x\\n\\"\n')

    def test_cEscape(self):
        self.assertEqual(cEscape("\x01\\"), "\\001\\\\")
