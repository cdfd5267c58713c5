"""
What the tracer tests share to show that a driver holds no reference cycle
(L{txenvoy.server.gc_freeze}: a replaced config must be freed by
reference counting alone).
"""

import gc


def withoutCollector(testCase):
    """Pause the cyclic collector until the test ends: only reference counting frees."""
    if gc.isenabled():
        gc.disable()
        testCase.addCleanup(gc.enable)
