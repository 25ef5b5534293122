MATCH (d:Document) SET d:Doc REMOVE d:Document;
