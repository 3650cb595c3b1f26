"""The project's declarative config (`/api/config`): what InsForge's CLI keeps in `insforge.toml`, read and
applied with a plan, a dry run and pruning."""
