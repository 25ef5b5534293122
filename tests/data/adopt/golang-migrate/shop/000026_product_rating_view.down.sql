DROP MATERIALIZED VIEW product_ratings;
