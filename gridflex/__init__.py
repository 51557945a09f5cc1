"""gridflex: utility demand-response programs end to end, on Kafka streams.

This package is the shared kernel every service uses (settings, the Avro codec, the topic
catalogue, the clock, the tariff calendar, money, metrics, logging, dead letters) and the
`gridflex` operator command. The services themselves live in `services/`.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
