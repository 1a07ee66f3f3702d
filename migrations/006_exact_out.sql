-- Exact-out orders (issue 24) name the output they want instead of their input: their
-- amount_in is unknown until they fill, and is then what the fill spent. Route options
-- (onlyDirectRoutes, dexes, maxHops, maxSplits) live in the payload, like the rest of the
-- request; an order stored before this migration routes with the defaults.
ALTER TABLE orders ALTER COLUMN amount_in DROP NOT NULL;
ALTER TABLE orders ADD COLUMN exact_amount_out numeric(40, 0) CHECK (exact_amount_out > 0);
ALTER TABLE orders ADD CONSTRAINT orders_amount_given
    CHECK (amount_in IS NOT NULL OR exact_amount_out IS NOT NULL);
