"""The enrollment rules: pure functions over plain records (no Kafka, no database)."""
