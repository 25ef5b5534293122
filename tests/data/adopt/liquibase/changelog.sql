--liquibase formatted sql

--changeset nadia:1
--comment: warehouses hold stock
CREATE TABLE warehouses (
    id serial PRIMARY KEY,
    code text NOT NULL UNIQUE
);
--rollback DROP TABLE warehouses;

--changeset nadia:2
CREATE TABLE stock_levels (
    warehouse_id integer NOT NULL REFERENCES warehouses (id),
    sku text NOT NULL,
    on_hand integer NOT NULL DEFAULT 0,
    PRIMARY KEY (warehouse_id, sku)
);
CREATE INDEX stock_levels_sku_idx ON stock_levels (sku);
--rollback DROP INDEX stock_levels_sku_idx;
--rollback DROP TABLE stock_levels;

--changeset "Omar Haddad":add-warehouse-city runInTransaction:true
ALTER TABLE warehouses ADD COLUMN city text;
/* liquibase rollback
ALTER TABLE warehouses DROP COLUMN city;
*/

--changeset nadia:seed-main-warehouse
INSERT INTO warehouses (code, city) VALUES ('MAIN', 'Lyon');
--rollback DELETE FROM warehouses WHERE code = 'MAIN';
