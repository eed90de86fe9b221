-- Bulk operations of the HTTP API (POST /bulk): what was asked (spec) and how
-- far it got (progress), both JSON that the API reads and writes whole, and the
-- server process running it, which saves its progress after each page
-- (heartbeat_at). Another server takes over an unfinished operation whose
-- heartbeat has gone quiet (its server stopped or died).
CREATE TABLE bulk_operations (
    id           text PRIMARY KEY,
    spec         text NOT NULL,
    progress     text NOT NULL,
    done         boolean NOT NULL DEFAULT false,
    owner        text NOT NULL,
    created_at   double precision NOT NULL,
    heartbeat_at double precision NOT NULL
);
CREATE INDEX bulk_operations_unfinished ON bulk_operations (heartbeat_at) WHERE NOT done;
