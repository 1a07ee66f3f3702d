"""Keep what a process builds at start-up out of the cyclic garbage collector's way."""

import gc


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now to the permanent generation
    (`gc.freeze`), where no later collection scans it again; only the first call does this.

    A process's start-up leaves tens of thousands of tracked objects that live as long as it
    does (FastAPI and pydantic models, asyncpg codecs, the routes, the market), and every full
    collection would walk them all, pausing every request and socket (measured in
    bench/README.md). Frozen objects are still freed by reference counting; only a cycle among
    them would never be collected.
    """
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
