// Every topic sits in exactly one area.
MATCH (t:Topic) OPTIONAL MATCH (t)-[r:IN_AREA]->(:Area) WITH t, count(r) AS areas RETURN sum(CASE WHEN areas = 1 THEN 0 ELSE 1 END) = 0;
