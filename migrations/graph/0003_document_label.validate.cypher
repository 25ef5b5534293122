MATCH (d:Doc) RETURN count(d) = 0;
