"""Human-facing output (rich tables, Markdown, plots) and the predict/evaluate calls that work on any backend."""
