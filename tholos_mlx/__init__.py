"""tholos-mlx: a private, local, OpenAI-compatible LLM server on MLX."""

__version__ = "0.1.0"
