"""Commands as a user drives them: chat through stdin, shell completion, tokenize."""
