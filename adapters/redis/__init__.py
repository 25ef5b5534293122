"""Redis (standalone or Cluster): the adapter, key scripts and data helpers."""
