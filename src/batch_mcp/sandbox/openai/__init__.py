"""Emulators of the OpenAI Batch API family: OpenAI itself, DeepInfra and Groq (see :mod:`.variants`)."""
