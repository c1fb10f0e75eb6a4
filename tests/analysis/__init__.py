"""The analyses (next-token, score and perplexity, compare, the logit lens, replay, bench) against direct
computations."""
