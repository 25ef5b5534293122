"""Graphs (Neo4j over Bolt, FalkorDB natively): logic written once over a transport and a dialect."""
