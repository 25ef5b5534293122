CREATE VIEW order_totals AS
SELECT o.id AS order_id, o.user_id, sum(oi.quantity * p.price_cents) AS total_cents
FROM orders o JOIN order_items oi ON oi.order_id = o.id JOIN products p ON p.id = oi.product_id
GROUP BY o.id, o.user_id;
