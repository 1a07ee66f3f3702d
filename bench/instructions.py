"""`python -m bench.instructions [--against OTHER_CHECKOUT]`: the API's instructions per
accepted order, counted by valgrind, for this checkout and optionally another.

Timings on a shared two-core machine move by tens of percent with whatever else runs; an
instruction count does not, so this is how two releases' accept paths are compared when the
machine is not quiet. Each checkout runs `bench/accept_driver.py` (this checkout's copy) with
its own `.venv` interpreter, under `valgrind --tool=callgrind`, twice: with `--posts` and with
three times as many orders. The difference divided by the extra orders is the cost of one
order, start-up and warm-up cancelled out. Each run gets a fresh database and an empty Redis
from embedded servers started here. Counts still move by a few percent between runs
(background tasks run per second of wall time, and valgrind slows time 50-fold); compare
differences larger than that.
"""

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from bench.clients import say
from bench.stack import Servers

HERE = Path(__file__).resolve().parents[1]
DRIVER = HERE / "bench" / "accept_driver.py"
_COLLECTED = re.compile(rb"Collected : (\d+)")


def count(checkout: Path, posts: int, database_url: str, redis_url: str) -> int:
    """Instructions valgrind counted for one run of the driver in `checkout`."""
    env = os.environ | {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RATE_LIMIT_PER_S": "0",
        "MAX_QUEUE_DEPTH": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONHASHSEED": "0",
    }
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    # -P: bench/ (the driver's folder) holds modules named like the standard library's
    argv += [str(checkout / ".venv" / "bin" / "python"), "-P", str(DRIVER), str(posts)]
    done = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{checkout}: the driver failed:\n{done.stderr.decode()[-2000:]}")
    return int(found.group(1))


async def measure(servers: Servers, checkout: Path, posts: int) -> float:
    """Instructions per accepted order in `checkout`."""
    totals = []
    for n in (posts, 3 * posts):
        url = await servers.fresh_database("instructions")
        await servers.flush_redis()
        started = time.monotonic()
        totals.append(count(checkout, n, url, servers.redis_url))
        took_s = time.monotonic() - started
        say(f"  {checkout.name}: {n} orders, {totals[-1]:,} instructions ({took_s:.0f} s)")
    return (totals[1] - totals[0]) / (2 * posts)


async def run(checkouts: list[Path], posts: int) -> dict[str, float]:
    servers = Servers()
    servers.start()
    try:
        return {str(c): await measure(servers, c, posts) for c in checkouts}
    finally:
        servers.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another checkout (with its own .venv)")
    parser.add_argument("--posts", type=int, default=100, help="orders in the shorter run")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    checkouts = [HERE] + ([args.against.resolve()] if args.against else [])
    say("» counting instructions per accepted order (2 runs per checkout, ~1-3 min each)")
    results = asyncio.run(run(checkouts, args.posts))
    for checkout, per_order in results.items():
        print(f"{checkout}: {per_order:,.0f} instructions per accepted order")
    if args.against:
        mine, theirs = results[str(HERE)], results[str(args.against.resolve())]
        print(f"this ÷ {args.against}: {mine / theirs:.3f}")


if __name__ == "__main__":
    main()
