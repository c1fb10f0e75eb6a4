"""The engine's rooms: loading (placement, prepack, adapters), one generation (drafts, constraints, speed
flags) and serve's batch."""
