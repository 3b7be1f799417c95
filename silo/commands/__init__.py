"""One module per `silo` subcommand; each exposes `register(subparsers)`."""
