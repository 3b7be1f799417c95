"""The site's executor: Silo's own process in place of Flower's `flower-superexec`, serving the
SuperNode's Runtime API (`--isolation process`). It runs only the app the site approved, only for
runs its coordinator signed, and always with the site's installed code (see node.py)."""
