"""The `edgecls` command line: one small module per command, heavy imports inside commands."""
