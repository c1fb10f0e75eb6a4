"""llmcli: inspect Hugging Face model directories and generate text from the terminal.

The package is layered, each layer importing only those below it (tests/test_import_graph.py holds it; the
picture is docs/architecture.md): cli and commands/ on top; client.py and foreign/, server/, analysis/ and
reports/ under them; engine/ (torch) under those; modelfs/ (model files, no torch) under the engine; and at the
bottom the shared modules (flags, genargs, plan, prompts, scoring, pairs, jobs, output, errors, units, quiet),
which import only each other and nothing above.
"""

__version__ = "0.1.0"
