"""The zoo's bundled checkpoints: one folder per entry (model.safetensors + config.json + README.md card)."""
