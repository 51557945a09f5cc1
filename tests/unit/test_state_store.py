"""PartitionStore: a batch's writes are visible at once, reach disk after the changelog, expire by key range."""

from __future__ import annotations

from aiokafka import TopicPartition

from gridflex.state import PartitionStore

CHANGELOG = TopicPartition("state-changelog", 2)


def test_writes_are_visible_before_they_are_persisted(tmp_path):
    store = PartitionStore(tmp_path / "p2", CHANGELOG)
    store.put("2025-07-15/M-1", {"1752609600000": [0, "ab", 2, 10, None]})
    assert store.get("2025-07-15/M-1") == {"1752609600000": [0, "ab", 2, 10, None]}
    assert store.get("2025-07-15/M-2") is None
    assert store.checkpoint == -1


def test_persisting_a_batch_keeps_a_later_batch_s_pending_write(tmp_path):
    store = PartitionStore(tmp_path / "p2", CHANGELOG)
    store.put("k", 1)
    first = store.seal()
    store.put("k", 2)  # the next batch changes the key before the first one is persisted
    second = store.seal()
    store.persist(first, changelog_offset=41)
    assert store.get("k") == 2 and store.checkpoint == 41
    store.persist(second, changelog_offset=42)
    assert store.get("k") == 2 and store.pending == {} and store.checkpoint == 42


def test_a_reopened_store_has_what_was_persisted_and_its_checkpoint(tmp_path):
    store = PartitionStore(tmp_path / "p2", CHANGELOG)
    store.put("a", [1])
    store.persist(store.seal(), changelog_offset=7)
    store.put("b", [2])  # sealed but never persisted: lost with the process, replayed from the changelog
    store.close()
    reopened = PartitionStore(tmp_path / "p2", CHANGELOG)
    assert (reopened.get("a"), reopened.get("b"), reopened.checkpoint) == ([1], None, 7)


def test_changelog_records_replay_puts_and_deletes(tmp_path):
    store = PartitionStore(tmp_path / "p2", CHANGELOG)
    store.apply_changelog([(b"a", b"[1]", 0), (b"b", b"[2]", 1), (b"a", None, 2)])
    assert (store.get("a"), store.get("b"), store.checkpoint) == (None, [2], 2)


def test_keys_before_a_date_bound_are_the_expired_days(tmp_path):
    store = PartitionStore(tmp_path / "p2", CHANGELOG)
    for key in ("2025-05-16/M-1", "2025-05-17/M-1", "2025-05-17/M-2", "2025-07-01/M-1"):
        store.put(key, {})
    store.persist(store.seal(), changelog_offset=3)
    assert list(store.keys_before("2025-05-17")) == ["2025-05-16/M-1"]
    store.delete("2025-05-16/M-1")
    assert list(store.keys_before("2025-06-01")) == ["2025-05-17/M-1", "2025-05-17/M-2"]
    writes = store.seal()
    assert writes.values == {b"2025-05-16/M-1": None}


def test_key_scans_see_writes_not_yet_on_disk_and_not_deleted_keys(tmp_path):
    store = PartitionStore(tmp_path / "p3", CHANGELOG)
    for key in ("!offline/SA-1", "!offline/SA-3", "account/SA-1"):
        store.put(key, True)
    store.persist(store.seal(), changelog_offset=2)
    store.put("!offline/SA-2", True)  # this batch's writes, still pending
    store.put("!offline/SA-3", True)  # pending over a key on disk: listed once
    store.delete("!offline/SA-1")
    assert list(store.keys_with_prefix("!offline/")) == ["!offline/SA-2", "!offline/SA-3"]
    assert list(store.keys_before("!offline/SA-3", start="!offline/")) == ["!offline/SA-2"]
    assert list(store.keys_before("account/SA-2")) == ["!offline/SA-2", "!offline/SA-3", "account/SA-1"]
