"""Agent memory (InsForge's `/api/memory`): durable memories an agent remembers, recalls by meaning, lists."""
