DROP FUNCTION product_stock(bigint);
