"""`python -m tholos_mlx` runs the command line."""

from tholos_mlx.cli import main

raise SystemExit(main())
