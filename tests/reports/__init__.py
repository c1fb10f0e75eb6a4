"""inspect and diff: what a model's files say, as JSON and as a terminal shows it."""
