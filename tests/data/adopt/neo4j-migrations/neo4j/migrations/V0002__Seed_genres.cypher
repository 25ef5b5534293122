// Genres every movie is filed under.
UNWIND ['Drama', 'Comedy', 'Documentary'] AS name
MERGE (:Genre {name: name});
