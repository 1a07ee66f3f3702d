"""Every Redis key and channel the engine uses, in one place."""

PREFIX = "oee:"

# arq queue that carries order jobs.
QUEUE_NAME = PREFIX + "queue"
# One pub/sub channel for every order event; each API process holds one subscription. A message
# is one event (a JSON object) or several, in order (a JSON array): `shared.events`.
EVENTS_CHANNEL = PREFIX + "events"
# Set of order ids that have not reached a terminal status (the active-orders cache).
ACTIVE_ORDERS = PREFIX + "active"
# Market state: reference prices (hash symbol -> decimal string) and pools per pair.
REF_PRICES = PREFIX + "market:ref"
MARKET_SEEDED = PREFIX + "market:seeded"
# Each pair's current venue spread (hash pair -> decimal string) and each pool's pair
# (hash pool address -> pair key).
VENUE_SPREADS = PREFIX + "market:spread"
POOL_PAIRS = PREFIX + "market:pool_pair"
# The last few minutes of every pair's venue prices, newest first (list of JSON snapshots,
# one per market tick): `shared.sim.prices`.
MARKET_HISTORY = PREFIX + "market:history"
MARKET_TICKER_LOCK = PREFIX + "market:ticker"
CLUSTER_GENESIS_MS = PREFIX + "cluster:genesis_ms"
# Launched tokens (hash mint -> JSON).
LAUNCHED_TOKENS = PREFIX + "market:launched"
# Per-client order counters for the rate limit: RATE_LIMIT + "<client>:<unix second>".
RATE_LIMIT = PREFIX + "ratelimit:"


def pools_key(pair_key: str) -> str:
    """Hash of pool address -> pool JSON for one unordered token pair."""
    return f"{PREFIX}market:pools:{pair_key}"


def pool_version_key(address: str) -> str:
    return f"{PREFIX}market:ver:{address}"


def signature_key(signature: str) -> str:
    """The simulated cluster's status record for one transaction signature."""
    return f"{PREFIX}cluster:sig:{signature}"


# Waiting orders: limit orders by directed pair (zset scored by limit price), snipers by mint.
def limits_key(mint_in: str, mint_out: str) -> str:
    return f"{PREFIX}waiting:limit:{mint_in}:{mint_out}"


def snipers_key(mint: str) -> str:
    return f"{PREFIX}waiting:sniper:{mint}"


LIMIT_PAIRS = PREFIX + "waiting:limit-pairs"  # set of "mint_in:mint_out" with waiting limits


def ws_token_key(token_hash: str) -> str:
    """A WebSocket token (one use, 60 s): the caller it stands for, by the token's hash."""
    return f"{PREFIX}wstoken:{token_hash}"


def auth_failures_key(client: str) -> str:
    """Invalid API keys presented by one client address in the current minute."""
    return f"{PREFIX}authfail:{client}"


def orders_per_s_key(account: str, second: int) -> str:
    """An account's orders in one second, for its max-orders-per-second risk limit."""
    return f"{PREFIX}risk:rate:{account}:{second}"
