-- legacy_notes was superseded by document bodies. Dropping it is category C: polyshift
-- infers the scope from the statement and keeps a verified backup of its rows.
DROP TABLE IF EXISTS legacy_notes;
