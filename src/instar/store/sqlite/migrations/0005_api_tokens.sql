-- Bearer tokens of the HTTP API: only a digest of each is kept (the token is
-- shown once, when made). A revoked token stays, so that its name, recorded as
-- the actor of the events it caused, is never given to another.
CREATE TABLE api_tokens (
    name       TEXT PRIMARY KEY,
    digest     TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    queue      TEXT,
    created_at REAL NOT NULL,
    revoked_at REAL
);

-- Keys the HTTP API signs with (page tokens), made once per database so that
-- every server process on it agrees.
CREATE TABLE api_keys (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The awakeables inbox: those in one state, oldest first.
CREATE INDEX awakeables_by_state ON awakeables (state, created_at);
