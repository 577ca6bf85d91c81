"""The command line (``livespt ...``): one module per command."""
