"""Outputs of a batch pipeline land where any Kafka producer would put their key."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from gridflex.batch import key_partition


@given(key=st.binary(min_size=1, max_size=64), partitions=st.integers(min_value=1, max_value=64))
def test_the_cached_partition_of_a_key_is_the_default_partitioner_s(key, partitions):
    every = list(range(partitions))
    assert key_partition(key, partitions) == DefaultPartitioner()(key, every, every)


# org.apache.kafka.common.utils.UtilsTest.testMurmur2: the Java client's murmur2 of these keys.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_keys_land_on_the_partitions_the_java_client_picks():
    for key, java_hash in JAVA_MURMUR2.items():
        for partitions in (1, 4, 12):
            assert key_partition(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions, key
