-- An order's insert carries the moment after which its API has stopped waiting for it (and
-- answered 503). A commit that reaches the server after that moment is refused, so an order
-- whose client was told "unavailable" can never appear later and execute. The check runs at
-- COMMIT (a deferred constraint trigger), after every statement of the transaction.
ALTER TABLE orders ADD COLUMN accept_by timestamptz;

CREATE FUNCTION orders_accepted_in_time() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.accept_by IS NOT NULL AND clock_timestamp() > NEW.accept_by THEN
        RAISE EXCEPTION 'order % reached COMMIT after its acceptance deadline', NEW.id
            USING ERRCODE = 'OE001';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER orders_accepted_in_time
    AFTER INSERT ON orders DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION orders_accepted_in_time();
