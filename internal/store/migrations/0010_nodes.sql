-- The Vigil nodes that share this database, each recorded by itself every
-- few seconds (cluster.Node).
CREATE TABLE IF NOT EXISTS nodes (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    http        TEXT NOT NULL DEFAULT '',
    version     TEXT NOT NULL DEFAULT '',
    started     INTEGER NOT NULL, -- unix ms
    last_seen   INTEGER NOT NULL, -- unix ms
    coordinator INTEGER NOT NULL DEFAULT 0
);
