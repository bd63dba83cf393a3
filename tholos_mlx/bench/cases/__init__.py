"""The cases a bench run can measure, one module each; each returns its typed result."""
