"""One module per command; each only parses flags and calls the layers below."""
