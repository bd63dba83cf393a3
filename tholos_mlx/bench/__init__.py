"""`tholos-mlx bench`: raw mlx-lm beside the server and its peers, the server's ceiling, its caches.

The package, one job a module:
  flags, plan    the command line, and the frozen Plan built once from it
  results        the typed result and the targets; everything else imports its shapes
  stats          medians, bootstrap intervals, verdicts
  prompts, workloads, synthetic   what is asked, and of which model
  sides/         raw mlx-lm, our server, a peer, the HTTP client that times them
  cases/         decode (--compare), cached, restart, structured, ceiling, speculation, agent_turn
  render/        Markdown, chart, files and headlines, reading only results
  main           runs a plan's cases and writes the result
MLX is imported only once a case that needs it runs: cli.py builds this parser on every command.
"""

from tholos_mlx.bench.flags import add_arguments
from tholos_mlx.bench.main import command

__all__ = ["add_arguments", "command"]
