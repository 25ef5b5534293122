DROP TABLE product_categories;
