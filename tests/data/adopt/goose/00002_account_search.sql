-- Keeps a search column in step with handle and bio.
-- +goose Up
ALTER TABLE accounts ADD COLUMN search text;

-- +goose StatementBegin
CREATE FUNCTION accounts_search() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search := lower(NEW.handle || ' ' || coalesce(NEW.bio, ''));
    RETURN NEW;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER accounts_search BEFORE INSERT OR UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_search();

-- +goose Down
DROP TRIGGER accounts_search ON accounts;
DROP FUNCTION accounts_search();
ALTER TABLE accounts DROP COLUMN search;
