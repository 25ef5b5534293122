DELETE FROM categories WHERE parent_id IS NULL AND name IN ('Books', 'Music', 'Garden');
