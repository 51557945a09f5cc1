"""The OpenADR 3.1 VTN: its wiring.

- ``gridflex.dispatch.event-lifecycle.v1`` → events as OpenADR objects, the decisions that answer
  the VTN's own event writes, and the webhook notifications each change owes subscribers
  (Postgres, one transaction per batch)
- ``gridflex.enrollment.state.v1`` → each provider's enrolled thermostats (the VENs' resources)
- the HTTP API (:mod:`services.vtn.api`): event writes → ``utility.energy-events.v1``, reports →
  ``partner.<provider>.thermostat-state.v1`` and ``partner.<provider>.dispatch-acks.v1``
- the webhook outbox → subscribers' callbacks; one that keeps failing → ``gridflex.dead-letters.v1``
"""

from __future__ import annotations

from gridflex.programs import ProgramCatalogue
from gridflex.streaming import ServiceRuntime
from gridflex.topics import ENROLLMENT_STATE, EVENT_LIFECYCLE
from services.vtn import api
from services.vtn.notifier import Notifier
from services.vtn.publisher import Publisher
from services.vtn.settings import VtnSettings
from services.vtn.storage import Database

SERVICE = "vtn"

settings = VtnSettings()
programs = ProgramCatalogue.load(settings.programs_dir)
runtime = ServiceRuntime(SERVICE, settings, web_port=settings.web_port)
app = runtime.app
database = Database(settings.database_url, programs)
publisher = Publisher(runtime)

lifecycle_pipeline = runtime.batch_pipeline(EVENT_LIFECYCLE, database.project_lifecycle, state_name="lifecycle")
accounts_pipeline = runtime.batch_pipeline(ENROLLMENT_STATE, database.project_accounts, state_name="accounts")
api.add_routes(runtime, settings, database, programs, publisher)
notifier = Notifier(settings, database, publisher)


@app.task
async def deliver_notifications() -> None:
    await notifier.run()
