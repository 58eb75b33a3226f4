-- Sites: armed state and plan. New sites start armed.
CREATE TABLE sites (
    name    TEXT PRIMARY KEY,
    armed   INTEGER NOT NULL DEFAULT 1,
    updated INTEGER NOT NULL
);

-- Detections.
CREATE TABLE events (
    id       TEXT PRIMARY KEY,  -- UUIDv7: sorts by time
    site     TEXT NOT NULL,
    sensor   TEXT NOT NULL,
    cameras  TEXT NOT NULL DEFAULT '[]', -- JSON array
    started  INTEGER NOT NULL,  -- unix ms
    ended    INTEGER,
    priority INTEGER NOT NULL DEFAULT 0,
    state    TEXT NOT NULL,
    distance REAL
);
CREATE INDEX events_site_started ON events(site, started);

-- Recorded clips, one per event and camera.
CREATE TABLE clips (
    id           TEXT PRIMARY KEY,
    event_id     TEXT NOT NULL,
    site         TEXT NOT NULL,
    camera       TEXT NOT NULL,
    started      INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL DEFAULT 0,
    frames       INTEGER NOT NULL DEFAULT 0,
    bytes        INTEGER NOT NULL DEFAULT 0,
    packets      INTEGER NOT NULL DEFAULT 0,
    packets_lost INTEGER NOT NULL DEFAULT 0,
    dir          TEXT NOT NULL,          -- relative to the clip storage
    file         TEXT NOT NULL DEFAULT '',
    thumbnail    TEXT NOT NULL DEFAULT '',
    codec        TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL,          -- recording, finishing, ready, failed, deleting
    interrupted  INTEGER NOT NULL DEFAULT 0,
    segments     TEXT NOT NULL DEFAULT '[]',
    error        TEXT NOT NULL DEFAULT '',
    finished     INTEGER
);
CREATE INDEX clips_site_started ON clips(site, started);
CREATE INDEX clips_event ON clips(event_id);

-- What the autoscaler and the coordinator decided, and why.
CREATE TABLE agent_history (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    action  TEXT NOT NULL,
    agent   TEXT NOT NULL DEFAULT '',
    camera  TEXT NOT NULL DEFAULT '',
    reason  TEXT NOT NULL DEFAULT '',
    agents  INTEGER NOT NULL,
    streams INTEGER NOT NULL,
    queued  INTEGER NOT NULL
);
