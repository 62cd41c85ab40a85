"""The `tokentree` command line."""
