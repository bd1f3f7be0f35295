"""`mss.serve.settle_heap`: once started, the startup heap is out of the collector's sight
and young collections run less often; cycles made later are still collected."""

from __future__ import annotations

import gc
import weakref

from mss.serve import GC_GEN0_THRESHOLD, settle_heap


def test_startup_objects_are_frozen_and_later_cycles_still_collected() -> None:
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle, made after the freeze
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
