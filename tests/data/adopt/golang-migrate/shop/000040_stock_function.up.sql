CREATE FUNCTION product_stock(p_id bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(delta), 0) FROM inventory_movements WHERE product_id = p_id
$$;
