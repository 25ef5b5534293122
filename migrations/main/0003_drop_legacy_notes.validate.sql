SELECT to_regclass('legacy_notes') IS NULL;
