SELECT to_regclass('documents') IS NOT NULL;
SELECT to_regclass('authors') IS NOT NULL;
