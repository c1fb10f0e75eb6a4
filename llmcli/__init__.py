"""llmcli: inspect Hugging Face model directories and generate text from the terminal."""

__version__ = "0.1.0"
