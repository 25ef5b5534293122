"""``polyshift serve``: the flags over HTTP for every language (OFREP), a JSON API for automation
and a web console for product teams, reading and writing through the same FlagAdmin, stores,
compare-and-set and audit log as the CLI."""
