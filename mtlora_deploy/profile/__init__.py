"""``mtlora profile``: honest latency/throughput measurements and the multi-task comparisons, as JSON, Markdown
and PNG. Timers (``timing``), what to measure (``runs``), the built-in comparisons (``comparisons``), reports
(``report``), plots (``plots``) and the entry point ``run_profile`` (``api``)."""
