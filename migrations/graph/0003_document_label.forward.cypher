// The graph's Doc nodes take the application's name for them: Document.
// polyshift: backup=Doc,Document,:ABOUT
MATCH (d:Doc) SET d:Document REMOVE d:Doc;
