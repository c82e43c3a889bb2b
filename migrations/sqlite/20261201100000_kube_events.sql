-- Kubernetes Events already on an application's timeline: one row per (application, event uid)
-- with the highest `count` recorded, so a repeated event is written once per new count and a
-- restart (the watch lists every event again) writes nothing twice. Rows older than 2 days go.
CREATE TABLE kube_events (
    application TEXT NOT NULL,
    event_uid TEXT NOT NULL,
    count BIGINT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (application, event_uid)
);
