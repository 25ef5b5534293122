// Topics are grouped into research areas: one Area node per distinct topic.area, linked by IN_AREA.
// polyshift: backup=Topic,Area,:IN_AREA
MATCH (t:Topic) MERGE (:Area {name: t.area});
MATCH (t:Topic), (a:Area) WHERE a.name = t.area MERGE (t)-[:IN_AREA]->(a);
