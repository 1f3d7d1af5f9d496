"""The shipped Hydra configs, installed as the package ``videogn.configs`` (see pyproject.toml)."""
