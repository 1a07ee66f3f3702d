-- Orders and their append-only event history. PostgreSQL is the source of truth.
CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    type            text        NOT NULL CHECK (type IN ('market', 'limit', 'sniper')),
    payload         jsonb       NOT NULL,
    status          text        NOT NULL,
    token_in        text        NOT NULL,  -- mint
    token_out       text        NOT NULL,  -- mint
    amount_in       numeric(40, 0) NOT NULL CHECK (amount_in > 0),  -- base units of token_in
    slippage_bps    integer     NOT NULL,
    client_order_id text,
    limit_price     numeric,
    expires_at      timestamptz,
    dex_chosen      text,
    pool            text,
    quote_price     numeric,
    min_amount_out  numeric(40, 0),
    executed_price  numeric,
    amount_out      numeric(40, 0),
    fee_amount      numeric(40, 0),
    tx_hash         text,
    tx_base64       text,
    last_valid_block_height bigint,
    -- A signed transaction whose outcome is not yet accounted for: a later run must ask the
    -- cluster about tx_hash before it signs anything new.
    tx_pending      boolean     NOT NULL DEFAULT false,
    slot            bigint,
    attempts        integer     NOT NULL DEFAULT 0,
    runs            integer     NOT NULL DEFAULT 0,  -- job runs that picked the order up
    last_seq        integer     NOT NULL DEFAULT 0,
    last_error      text,
    error_code      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_created_idx ON orders (created_at DESC, id DESC);
CREATE INDEX orders_status_created_idx ON orders (status, created_at DESC, id DESC);
-- The sweeper looks only at orders that are not finished yet.
CREATE INDEX orders_open_idx ON orders (updated_at)
    WHERE status NOT IN ('confirmed', 'failed', 'cancelled', 'expired');

CREATE TABLE order_events (
    order_id uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    seq      integer     NOT NULL,
    status   text        NOT NULL,
    attempt  integer     NOT NULL DEFAULT 0,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    data     jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (order_id, seq)
);

CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    request_hash text        NOT NULL,
    order_id     uuid        REFERENCES orders (id) ON DELETE CASCADE,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
