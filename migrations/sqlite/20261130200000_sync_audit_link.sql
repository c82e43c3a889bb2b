-- The audit row that recorded a sync's start (its `seq`): the outcome row links back to it.
ALTER TABLE syncs ADD COLUMN audit_seq BIGINT;
