"""The control plane: run journal, audit chain, rollback points and the artifact store."""
