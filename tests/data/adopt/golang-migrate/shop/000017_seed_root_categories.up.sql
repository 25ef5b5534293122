INSERT INTO categories (name) VALUES ('Books'), ('Music'), ('Garden');
