"""The ``mtlora`` command line: one thin file per subcommand, loaded lazily."""
