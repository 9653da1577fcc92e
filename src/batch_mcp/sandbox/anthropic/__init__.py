"""The Anthropic Message Batches emulator: ``app`` (routes), ``wire`` (shapes, auth), ``intake`` (the create body)."""
