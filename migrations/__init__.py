"""The sample application (documents, chunk embeddings, a topic graph and a cache) that
``polyshift demo`` and the tests run. Shipped with the package as ``polyshift.samples``."""
