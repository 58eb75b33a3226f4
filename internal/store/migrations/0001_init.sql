-- Devices, registered by their first message.
CREATE TABLE devices (
    pk           INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    site         TEXT NOT NULL,
    type         TEXT NOT NULL DEFAULT '',
    units        TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL DEFAULT 'online',
    status_since INTEGER NOT NULL, -- unix ms
    first_seen   INTEGER NOT NULL, -- unix ms
    last_seen    INTEGER NOT NULL, -- unix ms
    last_value   REAL,
    client_id    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX devices_site ON devices(site);

-- Readings; id order is arrival order, so retention deletes an id range.
CREATE TABLE readings (
    id       INTEGER PRIMARY KEY,
    device   INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    ts       INTEGER NOT NULL, -- device time, unix ms
    received INTEGER NOT NULL, -- arrival time, unix ms
    value    REAL NOT NULL,
    units    TEXT NOT NULL,
    seq      INTEGER
);
CREATE INDEX readings_device_ts ON readings(device, ts);

CREATE TABLE users (
    name      TEXT PRIMARY KEY,
    role      TEXT NOT NULL,
    hash      TEXT NOT NULL,
    publish   TEXT NOT NULL DEFAULT '[]', -- JSON array of topic patterns
    subscribe TEXT NOT NULL DEFAULT '[]',
    created   INTEGER NOT NULL,
    updated   INTEGER NOT NULL
);
