-- Browser sessions. The id is stored hashed: a copy of the database does
-- not let anyone log in.
CREATE TABLE sessions (
    id_hash   TEXT PRIMARY KEY,
    "user"    TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE, -- quoted: a keyword in PostgreSQL
    csrf      TEXT NOT NULL,
    created   INTEGER NOT NULL,
    expires   INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    agent     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions("user");

-- A site's plan, set in the UI; it wins over sites.<site>.plan in vigil.yaml.
ALTER TABLE sites ADD COLUMN plan TEXT NOT NULL DEFAULT '';
