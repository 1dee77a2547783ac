"""llmctl."""
