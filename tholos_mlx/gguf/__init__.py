"""`tholos-mlx import-gguf`: llama-family GGUF files into MLX model folders.

format.py reads a GGUF header, llama.py maps its tensors and metadata onto mlx-lm's llama,
tokenizer.py rebuilds its tokenizer, and importer.py converts and installs the folder.
"""

from tholos_mlx.gguf.importer import import_command

__all__ = ["import_command"]
