-- Accounts and API keys: every order belongs to an account, and only a key of that account
-- (or the built-in `public` account, in AUTH_MODE=open) can see or touch it.
CREATE TABLE accounts (
    name              text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    -- Pre-trade risk limits; NULL = the settings' default (RISK_* in .env.example), 0 = none.
    max_notional_usd  numeric CHECK (max_notional_usd >= 0),
    max_open_orders   integer CHECK (max_open_orders >= 0),
    max_orders_per_s  integer CHECK (max_orders_per_s >= 0),
    allowed_tokens    text[],  -- mints; NULL = every token the engine trades
    created_at        timestamptz NOT NULL DEFAULT now()
);
INSERT INTO accounts (name) VALUES ('public');

-- A key is shown once; only the SHA-256 of its secret part is kept.
CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    account      text        NOT NULL REFERENCES accounts (name),
    name         text        NOT NULL DEFAULT '',
    secret_hash  bytea       NOT NULL,
    scopes       text[]      NOT NULL CHECK (scopes <@ ARRAY['read', 'trade', 'admin']),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_account_idx ON api_keys (account, created_at);

-- No foreign key to accounts: its check would lock the account's row (FOR KEY SHARE) on every
-- order insert, and an account's concurrent orders would all share that one row lock (a
-- multixact growing with each). An order's account comes from a verified key, whose account
-- exists.
ALTER TABLE orders ADD COLUMN account text NOT NULL DEFAULT 'public';
-- Every list is an account's now: this index replaces the global one (an order keeps the
-- same number of indexes to maintain).
CREATE INDEX orders_account_created_idx ON orders (account, created_at DESC, id DESC);
DROP INDEX orders_created_idx;
-- The open-orders risk check counts only an account's unfinished orders.
CREATE INDEX orders_account_open_idx ON orders (account)
    WHERE status NOT IN ('confirmed', 'failed', 'cancelled', 'expired');

-- Idempotency keys are an account's own: two accounts may use the same key.
ALTER TABLE idempotency_keys ADD COLUMN account text NOT NULL DEFAULT 'public';
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (account, key);
