-- Limit and sniper orders wait in `pending` until their trigger fires.
ALTER TABLE orders ADD COLUMN max_price numeric;       -- sniper guard: at most tokenIn per tokenOut
ALTER TABLE orders ADD COLUMN triggered_at timestamptz; -- set once, by whoever wins trigger vs cancel
ALTER TABLE orders ADD COLUMN trigger_reason text;

-- The waiting set, rebuilt into Redis at start-up.
CREATE INDEX orders_waiting_idx ON orders (id)
    WHERE status = 'pending' AND triggered_at IS NULL AND type <> 'market';
-- The expiry scan touches only waiting orders that have an expiry, in expiry order.
CREATE INDEX orders_expiry_idx ON orders (expires_at)
    WHERE status = 'pending' AND triggered_at IS NULL AND expires_at IS NOT NULL;
