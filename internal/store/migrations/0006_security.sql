-- Audits of brokers (vigil up's self-audit, or on demand): the report as
-- JSON, with what lists need beside it.
CREATE TABLE audits (
    id          INTEGER PRIMARY KEY,
    started     INTEGER NOT NULL, -- unix ms
    duration_ms INTEGER NOT NULL,
    target      TEXT NOT NULL,
    grade       TEXT NOT NULL,
    worst       TEXT NOT NULL,    -- the most serious severity
    findings    INTEGER NOT NULL, -- how many above info
    trigger     TEXT NOT NULL,    -- start, scheduled, manual
    report      TEXT NOT NULL     -- audit.Report as JSON
);
CREATE INDEX audits_started ON audits(started);

-- Availability of watched brokers (watch): probes, and outages with their
-- start and end.
CREATE TABLE watch_probes (
    id           INTEGER PRIMARY KEY,
    target       TEXT NOT NULL,
    at           INTEGER NOT NULL, -- unix ms
    ok           INTEGER NOT NULL,
    error        TEXT NOT NULL DEFAULT '',
    connect_ms   REAL NOT NULL DEFAULT 0,
    round_trip_ms REAL NOT NULL DEFAULT 0,
    sys          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX watch_probes_target_at ON watch_probes(target, at);

CREATE TABLE watch_outages (
    target  TEXT NOT NULL,
    started INTEGER NOT NULL, -- unix ms
    ended   INTEGER,          -- NULL while it lasts
    reason  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (target, started)
);
