"""The command line's faces: one module per subcommand family, each with ``add_parser``
and its handlers. ``cli.py`` assembles them; nothing else imports this package."""
