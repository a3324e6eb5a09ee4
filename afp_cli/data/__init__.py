"""Training data for `afp align`: reading AFP JSONL files, tokenising, and collating batches."""
