-- Notification channels: where notifications go and the rules that choose
-- what goes there.
CREATE TABLE notify_channels (
    id           TEXT PRIMARY KEY,
    site         TEXT NOT NULL DEFAULT '',    -- '' = every site
    kind         TEXT NOT NULL,               -- webpush, ntfy, webhook, mqtt
    name         TEXT NOT NULL,
    enabled      INTEGER NOT NULL DEFAULT 1,
    min_priority INTEGER NOT NULL DEFAULT 0,
    cooldown_ms  INTEGER NOT NULL DEFAULT 0,  -- 0 = the default (60 s), negative = none
    quiet_hours  TEXT NOT NULL DEFAULT '',    -- '' or HH:MM-HH:MM, server local time
    url          TEXT NOT NULL DEFAULT '',
    secret       TEXT NOT NULL DEFAULT '',    -- webhook HMAC key or ntfy token
    kinds        TEXT NOT NULL DEFAULT '[]',  -- JSON array; [] = every kind
    created      INTEGER NOT NULL,
    updated      INTEGER NOT NULL
);

-- Browsers subscribed to Web Push, one row per push endpoint.
CREATE TABLE push_subscriptions (
    id         TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL DEFAULT '',
    endpoint   TEXT NOT NULL UNIQUE,
    p256dh     TEXT NOT NULL,
    auth       TEXT NOT NULL,
    created    INTEGER NOT NULL,
    user_agent TEXT NOT NULL DEFAULT ''
);

-- The delivery log: one row per notification per channel.
CREATE TABLE notify_deliveries (
    id         INTEGER PRIMARY KEY,
    channel_id TEXT NOT NULL,
    at         INTEGER NOT NULL,
    title      TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    ok         INTEGER NOT NULL,
    error      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX notify_deliveries_channel ON notify_deliveries(channel_id, id);

-- Small server settings (the VAPID key pair).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
