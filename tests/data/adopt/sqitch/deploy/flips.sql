-- Deploy flipr:flips to pg

BEGIN;

CREATE TABLE flipr.flips (
    id        bigserial   PRIMARY KEY,
    nickname  text        NOT NULL REFERENCES flipr.users (nickname),
    body      text        NOT NULL DEFAULT '' CHECK (length(body) <= 180),
    timestamp timestamptz NOT NULL DEFAULT clock_timestamp()
);

COMMIT;
