"""``python -m mtlora_deploy`` runs the CLI."""

from mtlora_deploy.cli.main import main

main()
