"""Reading model files without torch: the default model, broken and hostile directories, the Hub, remote code."""
