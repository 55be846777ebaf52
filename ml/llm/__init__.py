"""Language-model access: provider clients, deployments and their configuration (pure asyncio, no Ray)."""
