"""Training-side machinery shared by methods: activation capture to bounded-memory disk shards, and resume."""
