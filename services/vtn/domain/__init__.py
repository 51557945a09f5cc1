"""Pure mapping between OpenADR 3.1 objects and gridflex records: no Kafka, no database, no asyncio."""


class Invalid(ValueError):
    """A request that cannot be mapped: every problem found, each a sentence naming the field."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems
