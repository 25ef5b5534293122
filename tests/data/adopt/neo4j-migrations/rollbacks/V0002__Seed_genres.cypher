MATCH (g:Genre) WHERE g.name IN ['Drama', 'Comedy', 'Documentary'] DETACH DELETE g;
