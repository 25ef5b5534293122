MATCH (p:Person)-[:DIRECTED]->(m:Movie)
SET p:Director;
