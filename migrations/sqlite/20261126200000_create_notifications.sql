-- Notifications. The outbox: one row per notifiable event, written in the same transaction as
-- the event's timeline row. The sender routes each event to the targets whose subscriptions
-- match (one delivery per event and target) and retries a delivery with exponential backoff.

CREATE TABLE notification_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key  TEXT NOT NULL UNIQUE,   -- sent with every attempt, to every target
    trigger_name     TEXT NOT NULL,          -- drift_opened | drift_stale | sync_failed | ...
    application      TEXT NOT NULL REFERENCES applications (name),
    project          TEXT NOT NULL,
    timeline_id      BIGINT NOT NULL,        -- the timeline entry the message links to
    occurred_at      BIGINT NOT NULL,
    message          TEXT NOT NULL,
    detail           TEXT NOT NULL,          -- JSON of safe scalar fields (never Secret values)
    routed_at        BIGINT                  -- NULL until its deliveries exist
);
CREATE INDEX notification_events_unrouted ON notification_events (id) WHERE routed_at IS NULL;

CREATE TABLE notification_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         BIGINT NOT NULL REFERENCES notification_events (id),
    target           TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,        -- also the lease: a sender claims a row by moving it
    last_attempt_at  BIGINT,
    last_error       TEXT,
    delivered_at     BIGINT,
    UNIQUE (event_id, target)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (target, next_attempt_at) WHERE status = 'pending';

-- Time-based triggers fire once: a drift episode still open after N minutes, a pin older than N hours.
ALTER TABLE drift_episodes ADD COLUMN stale_notified_at BIGINT;
ALTER TABLE pins ADD COLUMN long_notified_at BIGINT;
