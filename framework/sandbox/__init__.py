"""Embedded servers for tests, the sandbox and the demo. A leaf: production code never imports it."""
