"""Configuration: YAML profiles and environment overlays into typed pydantic models,
with origins for every key, did-you-mean errors and the resource-caps check."""
