"""`gridflex status` reads each service's /health and /metrics: what it makes of them."""

from gridflex.service_status import format_services, summarize

METRICS = """\
# TYPE gridflex_consumer_lag gauge
gridflex_consumer_lag{service="dispatch",group="g-events",topic="utility.energy-events.v1",partition="0"} 0.0
gridflex_consumer_lag{service="dispatch",group="g-events",topic="utility.energy-events.v1",partition="1"} 7.0
gridflex_consumer_lag{service="dispatch",group="g-fanout",topic="gridflex.enrollment.state.v1",partition="0"} 5.0
# TYPE gridflex_last_commit_timestamp_seconds gauge
gridflex_last_commit_timestamp_seconds{service="dispatch",group="g-events",topic="utility.energy-events.v1",partition="0"} 100.0
gridflex_last_commit_timestamp_seconds{service="dispatch",group="g-events",topic="utility.energy-events.v1",partition="1"} 900.0
gridflex_last_commit_timestamp_seconds{service="dispatch",group="g-fanout",topic="gridflex.enrollment.state.v1",partition="0"} 400.0
# TYPE gridflex_state_ready gauge
gridflex_state_ready{service="dispatch",state="events"} 1.0
gridflex_state_ready{service="dispatch",state="fanout"} 0.0
# TYPE gridflex_dead_letters_total counter
gridflex_dead_letters_total{service="dispatch",source_topic="utility.energy-events.v1",reason_code="UNDECODABLE"} 2.0
gridflex_dead_letters_total{service="dispatch",source_topic="utility.energy-events.v1",reason_code="UNKNOWN_PROGRAM"} 1.0
"""


def test_lag_is_summed_and_only_partitions_with_records_waiting_count_as_stalled():
    health = summarize("dispatch", "127.0.0.1:8103", 200, METRICS, now=1000.0)
    assert health.health == "ready"
    assert health.lag == 12
    # partition 0 of the events group committed long ago but has nothing waiting: not stalled
    assert health.stalled_s == 600
    assert health.state == "1/2"
    assert health.dead_letters == 3


def test_a_service_answering_503_is_starting_and_one_not_answering_is_down():
    assert summarize("baseline", "127.0.0.1:8104", 503, METRICS, now=1000.0).health == "starting"
    down = summarize("baseline", "127.0.0.1:8104", None, None, now=1000.0)
    assert (down.health, down.lag, down.state) == ("down", None, None)


def test_the_table_shows_a_dash_for_what_is_unknown_and_zero_as_zero():
    table = format_services([summarize("telemetry", "127.0.0.1:8101", 200, "", now=0.0),
                             summarize("baseline", "127.0.0.1:8104", None, None, now=0.0)])
    header, telemetry, baseline = table.splitlines()
    assert header.split()[:3] == ["SERVICE", "ADDRESS", "HEALTH"]
    assert telemetry.split() == ["telemetry", "127.0.0.1:8101", "ready", "0", "0", "-", "0"]
    assert baseline.split() == ["baseline", "127.0.0.1:8104", "down", "-", "-", "-", "-"]
