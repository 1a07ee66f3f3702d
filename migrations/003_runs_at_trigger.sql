-- Job runs already spent when a waiting order was last triggered: a limit order that is
-- triggered and re-armed many times must not use up its run budget (runs itself keeps
-- counting: it is the fencing token of every run's writes).
ALTER TABLE orders ADD COLUMN runs_at_trigger integer NOT NULL DEFAULT 0;
