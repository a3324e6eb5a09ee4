"""One module per `afp` command: each parses its options and calls one library function."""
