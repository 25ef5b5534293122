CREATE MATERIALIZED VIEW product_ratings AS
SELECT product_id, avg(rating)::numeric(3,2) AS average, count(*) AS reviews FROM reviews GROUP BY product_id;
CREATE UNIQUE INDEX product_ratings_product_id ON product_ratings (product_id);
