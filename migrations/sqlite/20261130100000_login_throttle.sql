-- Sign-in throttling decides atomically: an attempt takes its key's row lock (this upsert), then
-- counts and records itself in `login_failures` in the same transaction, before the password is
-- checked. Parallel attempts therefore queue on the lock instead of all reading the same count.
CREATE TABLE login_throttle (
    key         TEXT PRIMARY KEY NOT NULL,   -- 'user:NAME' or 'ip:ADDRESS', as in login_failures
    touched_at  BIGINT NOT NULL              -- last attempt; rows idle past the window are purged
);
