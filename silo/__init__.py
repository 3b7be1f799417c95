"""The `silo` command: the one place that knows both the site (client/) and the coordinator (server/)."""
