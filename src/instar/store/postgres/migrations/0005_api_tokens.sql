-- Bearer tokens of the HTTP API: only a digest of each is kept (the token is
-- shown once, when made). A revoked token stays, so that its name, recorded as
-- the actor of the events it caused, is never given to another.
CREATE TABLE api_tokens (
    name       text PRIMARY KEY,
    digest     text NOT NULL UNIQUE,
    scopes     text NOT NULL,
    queue      text,
    created_at double precision NOT NULL,
    revoked_at double precision
);

-- Keys the HTTP API signs with (page tokens), made once per database so that
-- every server process on it agrees.
CREATE TABLE api_keys (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- The awakeables inbox: those in one state, oldest first.
CREATE INDEX awakeables_by_state ON awakeables (state, created_at);
