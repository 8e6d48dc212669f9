"""Human-facing output: rich tables, Markdown, plots."""
