DROP INDEX products_price_idx;
