"""A result as Markdown, a chart, files and headline lines: reads results, nothing else of the bench."""
